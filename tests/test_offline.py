"""The host side makes no network calls: host commands refuse any socket in
their own process (an audit hook), and the end-to-end tests run them in a
namespace with no interfaces (tests/test_end_to_end.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import TASK, World, child_argv

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


# -- modules (issue 9): `kit run` loads no network client ---------------------

# Runs the real ``kit`` entry point in-process, then lists every module loaded.
MODULES = """
import json, os, sys
from kit.cli.fast import main
sys.argv = ["kit"] + sys.argv[1:]
try:
    code = main()
except SystemExit as exc:
    code = exc.code
with open(os.environ["MODULES_OUT"], "w") as f:
    json.dump(sorted(sys.modules), f)
sys.exit(code)
"""

# Clients that talk to the network, the event loop that would drive one, and
# the socket module under them all: today neither host command loads even
# ``socket``; a dependency that starts to must be a decision, not an accident.
NETWORK_CLIENTS = (
    "socket",
    "_socket",
    "http.client",
    "urllib.request",
    "urllib3",
    "requests",
    "httpx",
    "httpcore",
    "aiohttp",
    "ssl",
    "_ssl",
    "smtplib",
    "ftplib",
    "poplib",
    "imaplib",
    "nntplib",
    "telnetlib",
    "xmlrpc.client",
    "socketserver",
    "http.server",
    "asyncio",
    "websockets",
    "paramiko",
)


def _modules_of(world: World, tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["MODULES_OUT"] = str(out)
    done = subprocess.run(
        [sys.executable, "-c", MODULES, *args],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert b"Traceback" not in done.stderr, done.stderr
    return done.returncode, set(json.loads(out.read_text()))


def test_kit_run_and_verify_import_no_network_client(
    world: World, tmp_path: Path
) -> None:
    issued = world.issue(max_uses=2)
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(issued.data)
    home = str(world.host_home("build-01"))
    out = tmp_path / "out"
    code, run_mods = _modules_of(
        world,
        tmp_path,
        "run",
        str(bundle),
        "--task",
        TASK,
        "--home",
        home,
        "--",
        *child_argv(out),
    )
    assert code == 0 and out.read_bytes() == issued.secret  # a real release
    code, verify_mods = _modules_of(
        world, tmp_path, "verify", str(bundle), "--task", TASK, "--home", home
    )
    assert code == 0
    for mods in (run_mods, verify_mods):
        assert "kit.host.host" in mods  # the probe saw the real work
        loaded = sorted(m for m in NETWORK_CLIENTS if m in mods)
        assert loaded == [], (
            f"network client modules loaded by a host command: {loaded}"
        )
