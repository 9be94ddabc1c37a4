"""The README walk-through runs as written, so it cannot drift from kit.

It shares the parser and the environment of tests/docrunner.py with the
guides' examples, but runs as one plain script: the README shows refusals
next to successes in one block and carries no doctest directives.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from docrunner import PRELUDE, ROOT, environment, parse


def test_walk_through_runs_as_written(tmp_path: Path) -> None:
    readme = ROOT / "README.md"
    start = readme.read_text().splitlines().index("## Walk-through")
    blocks = [b for b in parse(readme) if b.lang == "sh" and b.line > start]
    script = PRELUDE + "\n".join(b.text for b in blocks)
    script = script.replace("/path/to/kit/.venv/bin", str(Path(sys.executable).parent))
    script = script.replace("/path/to/kit", str(ROOT))
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=environment(tmp_path),
        stdin=subprocess.DEVNULL,
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
    # Every kit line of the walk-through ran.
    invoked = (tmp_path / ".kit-invocations").read_text().splitlines()
    assert len(invoked) >= sum(len(b.kit_lines()) for b in blocks)
