"""An offline host installs kit from a wheelhouse with no package index."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_install_from_wheelhouse_without_an_index(tmp_path: Path) -> None:
    wheels = tmp_path / "wheelhouse"
    subprocess.run(
        ["make", "-C", str(ROOT), "wheelhouse", f"WHEELHOUSE={wheels}"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    names = sorted(p.name for p in wheels.iterdir())
    assert any(n.startswith("kit-") for n in names)
    assert any(n.startswith("cryptography-") for n in names)

    venv = tmp_path / "host-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "--no-index",
            "--find-links",
            str(wheels),
            "kit",
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=600,
    )
    done = subprocess.run(
        [str(venv / "bin" / "kit"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == "kit 0.1.0"
