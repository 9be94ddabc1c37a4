"""Secret delivery to the child: each mode delivers exactly the secret to the
child alone, the environment is an allowlist, and nothing is left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import KIT, TASK, World, child_argv

from kit.errors import DeniedError, UsageError
from kit.host import runner
from kit.host.runner import Delivery, make_delivery, run_child

SECRET = b"delivery-secret-42"

READERS = {
    "env": 'printf %s "$S"',
    "fd": 'cat /proc/self/fd/"$S_FD"',
    "file": 'cat "$S_FILE"',
    "stdin": "cat",
}


@pytest.mark.parametrize("mode", sorted(READERS))
def test_each_mode_delivers_exactly_the_secret(tmp_path: Path, mode: str) -> None:
    out = tmp_path / "out"
    script = f"{READERS[mode]} > {out}; env > {tmp_path}/env"
    status, _ = run_child(("/bin/sh", "-c", script), "S", SECRET, Delivery(mode))
    assert status == 0
    assert out.read_bytes() == SECRET
    env = (tmp_path / "env").read_bytes()
    assert (SECRET in env) == (mode == "env")  # only env mode puts it there


def test_file_mode_removes_the_file_after_the_child(tmp_path: Path) -> None:
    record = tmp_path / "path"
    run_child(
        (
            "/bin/sh",
            "-c",
            f'printf %s "$S_FILE" > {record}; '
            'stat -c %a "$S_FILE" > ' + str(tmp_path / "mode"),
        ),
        "S",
        SECRET,
        Delivery("file"),
    )
    path = Path(record.read_text())
    assert (tmp_path / "mode").read_text().strip() == "600"
    assert not path.exists() and not path.parent.exists()


def test_fd_mode_memfd_is_sealed_against_writes(tmp_path: Path) -> None:
    script = (
        'printf x >> /proc/self/fd/"$S_FD" 2>/dev/null && echo wrote || echo sealed'
    )
    out = tmp_path / "out"
    run_child(
        ("/bin/sh", "-c", f"{{ {script}; }} > {out}"), "S", SECRET, Delivery("fd")
    )
    assert out.read_text().strip() == "sealed"


def test_environment_is_an_allowlist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KIT_PASSPHRASE_FILE", "/somewhere/pass")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "long-lived-key")
    monkeypatch.setenv("JOB_SETTING", "kept")
    out = tmp_path / "env"
    run_child(
        ("/bin/sh", "-c", f"env > {out}"),
        "S",
        SECRET,
        Delivery("env", ("JOB_SETTING",)),
    )
    names = {line.split("=", 1)[0] for line in out.read_text().splitlines()}
    assert "KIT_PASSPHRASE_FILE" not in names
    assert "AWS_SECRET_ACCESS_KEY" not in names
    assert {"JOB_SETTING", "S", "PATH"} <= names


def test_core_dumps_are_disabled_for_the_child(tmp_path: Path) -> None:
    """In a process of its own: run_child lowers the hard limit for good, and
    a test process (an xdist worker) may not raise it back."""
    out = tmp_path / "ulimit"
    script = (
        "import resource\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_CORE)\n"
        "resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))  # as high as may be\n"
        "from kit.host.runner import run_child\n"
        f"run_child(('/bin/sh', '-c', 'ulimit -c > {out}'), 'S', b's')\n"
        "assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert out.read_text().strip() == "0"


def test_child_status_and_signals_are_reported(tmp_path: Path) -> None:
    assert run_child(("/bin/sh", "-c", "exit 7"), "S", SECRET)[0] == 7
    assert run_child(("/bin/sh", "-c", "kill -TERM $$"), "S", SECRET)[0] == -15
    assert run_child((str(tmp_path / "missing"),), "S", SECRET)[0] == 127
    noexec = tmp_path / "noexec"
    noexec.write_text("#!/bin/sh\n")
    os.chmod(noexec, 0o600)
    assert run_child((str(noexec),), "S", SECRET)[0] == 126


def test_unknown_mode_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="delivery mode"):
        make_delivery("clipboard")
    # A record made without the check is checked before anything starts.
    with pytest.raises(UsageError, match="delivery mode"):
        run_child(("/bin/true",), "S", SECRET, Delivery("clipboard"))


def test_file_mode_without_tmpfs_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(runner, "TMPFS", tmp_path / "no-tmpfs")
    with pytest.raises(DeniedError, match="needs a tmpfs") as refused:
        run_child(("/bin/true",), "S", SECRET, Delivery("file"))
    assert refused.value.code == "delivery-not-possible"


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM])
def test_a_stop_signal_leaves_no_secret_file(
    world: World, tmp_path: Path, signum: int
) -> None:
    """A closed session (SIGHUP), a quit or a supervisor's stop reaches the
    job; kit waits for it, writes the exit receipt and removes the file."""
    record = tmp_path / "path"
    script = 'printf %s "$KIT_SECRET_FILE" > "$0"; exec sleep 30'
    issued = world.issue(commands=(("sh", "-c", script),))
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(issued.data)
    proc = subprocess.Popen(
        [str(KIT), "run", str(bundle), "--task", TASK, "--deliver", "file",
         "--home", str(world.host_home("build-01")), "--", "sh", "-c", script,
         str(record)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (record.exists() and record.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
        time.sleep(0.05)
    secret_file = Path(record.read_text())
    assert secret_file.read_bytes() == issued.secret
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    assert not secret_file.exists() and not secret_file.parent.exists()
    last = world.receipts()[-1]
    assert (last.event, last.exit_status) == ("exit", -signum)


def test_a_signal_before_the_child_starts_removes_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the secret's file and the child: unwound, file removed, the
    command never started, reported as ended by that signal."""
    made: list[Path] = []
    real = runner._tmpfs_file

    @contextlib.contextmanager
    def then_hang_up(secret: bytes) -> Iterator[Path]:
        with real(secret) as path:
            made.append(path)
            os.kill(os.getpid(), signal.SIGHUP)
            yield path

    monkeypatch.setattr(runner, "_tmpfs_file", then_hang_up)
    said: list[str] = []
    status, _ = run_child(
        ("/bin/sh", "-c", f"touch {tmp_path}/ran"), "S", SECRET, Delivery("file"),
        on_start_error=said.append,
    )  # fmt: skip
    assert status == -signal.SIGHUP
    assert said == [f"/bin/sh was not started: signal {int(signal.SIGHUP)} came first"]
    assert made and not made[0].exists() and not made[0].parent.exists()
    assert not (tmp_path / "ran").exists()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # handlers restored


def test_a_full_tmpfs_refuses_file_delivery_before_the_use_is_spent(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secret's file is made and its room taken before the use is
    counted: a full (or read-only) tmpfs is a refusal on record that costs
    no use, not a release whose job never runs."""
    import errno

    from kit.cli import fast
    from kit.errors import DeniedError

    monkeypatch.setattr(runner, "TMPFS", tmp_path / "shm")
    (tmp_path / "shm").mkdir()

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner.os, "posix_fallocate", full)
    issued = world.issue(max_uses=1)
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(issued.data)
    out = tmp_path / "out"
    args: dict[str, Any] = {
        "bundle": str(bundle), "task": TASK, "home": world.host_home("build-01"),
        "deliver": "file", "keep_env": None, "dataset": None, "yes": True,
    }  # fmt: skip
    with pytest.raises(DeniedError, match="cannot reserve 8192 bytes") as denied:
        fast.run_bundle(command=list(child_argv(out)), **args)
    assert denied.value.code == "delivery-not-possible"
    assert world.uses() == [] and not out.exists()
    assert [(r.event, r.reason) for r in world.receipts()] == [
        ("deny", "delivery-not-possible")
    ]
    assert list((tmp_path / "shm").iterdir()) == []  # nothing left behind
    monkeypatch.undo()
    monkeypatch.setattr(runner, "TMPFS", tmp_path / "shm")
    script = 'cat "$KIT_SECRET_FILE" > "$0"; ls -l "$KIT_SECRET_FILE" >> "$0.ls"'
    ok = world.issue(max_uses=1, commands=(("sh", "-c", script),))
    bundle.write_bytes(ok.data)
    status = fast.run_bundle(command=["sh", "-c", script, str(out)], **args)
    assert status == 0 and out.read_bytes() == ok.secret  # exactly, not 8 KiB
    assert list((tmp_path / "shm").iterdir()) == []


def test_the_reserved_file_is_removed_before_run_child_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only after the exit receipt (which may wait for a lock while a
    stop signal would end kit with the secret still on tmpfs)."""
    monkeypatch.setattr(runner, "TMPFS", tmp_path)
    with runner.reserved_file() as path:
        status, _ = run_child(
            ("/bin/sh", "-c", f'cat "$S_FILE" > {tmp_path}/got'), "S", SECRET,
            Delivery("file"), reserved=path,
        )  # fmt: skip
        assert status == 0 and (tmp_path / "got").read_bytes() == SECRET
        assert not path.exists() and not path.parent.exists()


def test_a_signal_while_the_child_starts_reaches_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop signal during Popen (after the fork) is passed on to the job,
    which kit then waits for: never reported as 'not started' while the job
    runs with the secret."""
    real = subprocess.Popen

    def then_terminated(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        child = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return child

    monkeypatch.setattr(runner.subprocess, "Popen", then_terminated)
    said: list[str] = []
    status, _ = run_child(
        ("/bin/sh", "-c", f"sleep 5; touch {tmp_path}/finished"), "S", SECRET,
        Delivery("file"), on_start_error=said.append,
    )  # fmt: skip
    assert status == -signal.SIGTERM and said == []
    assert not (tmp_path / "finished").exists()


def test_an_ignored_hang_up_stays_ignored(tmp_path: Path) -> None:
    """Under nohup the job must survive the session closing, as before."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        status, _ = run_child(
            ("/bin/sh", "-c", f"grep SigIgn /proc/self/status > {tmp_path}/ign"),
            "S", SECRET,
        )  # fmt: skip
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert status == 0
    mask = int((tmp_path / "ign").read_text().split()[1], 16)
    assert mask & (1 << (signal.SIGHUP - 1))
