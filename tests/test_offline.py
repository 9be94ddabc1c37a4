"""The host side makes no network calls: host commands refuse any socket in
their own process (an audit hook), and the end-to-end tests run them in a
namespace with no interfaces (tests/test_end_to_end.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import TASK, World

# A host command whose library code (patched here) tries the network.
PROBE = """
import socket, sys
from kit.host import host as host_mod
def leaky(self, *a, **k):
    socket.create_connection(("127.0.0.1", 9))
host_mod.Host.check = leaky
from kit.cli.main import app
sys.argv = ["kit"] + sys.argv[1:]
app()
"""


def test_host_command_refuses_sockets(world: World, tmp_path: Path) -> None:
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue().data)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            "verify",
            str(bundle),
            "--task",
            TASK,
            "--home",
            str(world.host_home("build-01")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "the offline host tried network access" in done.stderr
    assert "Traceback" not in done.stderr


def test_importing_the_cli_installs_no_hook() -> None:
    probe = (
        "import socket\nfrom kit.cli import signer_cmds\n"
        "socket.socket().close()\nprint('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.strip() == "ok"
