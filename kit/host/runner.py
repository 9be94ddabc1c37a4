"""Starting the one child process that receives the secret.

The secret is placed in the child's environment only (never argv, never a
file); the parent forwards SIGINT and SIGTERM and waits for the child.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from types import FrameType

from kit.errors import DeniedError


def resolve(command: tuple[str, ...]) -> str:
    """The executable ``command[0]`` names, or DeniedError if there is none."""
    exe = shutil.which(command[0])
    if exe is None:
        raise DeniedError("command-not-found", f"command {command[0]!r} not found")
    return exe


def run_child(
    command: tuple[str, ...], env_name: str, secret: bytes
) -> tuple[int, int]:
    """Run ``command`` with the secret in ``env_name``; return (status, ms).

    Status is the child's exit code, or minus the signal number that ended it.
    """
    env = {k: v for k, v in os.environb.items() if k != env_name.encode()}
    env[env_name.encode()] = secret
    start = time.monotonic()
    try:
        child = subprocess.Popen(list(command), env=env, close_fds=True)
    except FileNotFoundError:
        return 127, 0
    except PermissionError:
        return 126, 0
    finally:
        del env

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return status, int((time.monotonic() - start) * 1000)
