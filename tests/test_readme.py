"""The README walk-through runs as written, so it cannot drift from kit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_walk_through_runs_as_written(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    walk = text[text.index("## Walk-through") :]
    script = "\n".join(re.findall(r"```sh\n(.*?)```", walk, re.S))
    script = script.replace("/path/to/kit/.venv/bin", str(Path(sys.executable).parent))
    script = script.replace("/path/to/kit", str(ROOT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout + done.stderr
    for expected in (
        "enrolled host build-01 for env prod",
        "pinned trust root v2 (checked against its predecessor)",
        "ok: bundle",
        "backfill: token of 43 bytes",
        "kit: denied [wrong-task]",
        "kit: denied [uses-exhausted]",
        "exported receipts 1..4",
        "used x1/1",
        "no anomalies",
    ):
        assert expected in out, f"{expected!r} missing from the walk-through:\n{out}"
    assert "Traceback" not in out and "error:" not in out
