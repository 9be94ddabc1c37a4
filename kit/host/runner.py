"""Starting the one child process that receives the secret.

The child gets an allowlisted environment, never the caller's whole one, and
the secret by one of four delivery modes (docs/host.md):

- ``env``: in the environment variable the bundle names (the default);
- ``fd``: in a sealed, read-only memfd inherited by the child, its number in
  ``<NAME>_FD``;
- ``file``: in a 0600 file in a private 0700 folder on tmpfs (/dev/shm), its
  path in ``<NAME>_FILE``, removed when the child exits;
- ``stdin``: written to the child's standard input, which is then closed.

Core dumps are disabled for kit and the child, so the secret cannot reach a
core file; SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to the child.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

from kit.encoding import check_env_name
from kit.errors import DeniedError, FormatError, UsageError
from kit.formats.bundle import DELIVERY_MODES, MAX_SECRET
from kit.fsutil import os_reason

MODES = DELIVERY_MODES
# Variables a job may rely on; everything else must be asked for with keep.
BASE_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "TERM",
    "TZ",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "PWD",
)
TMPFS = Path("/dev/shm")  # noqa: S108 - mkdtemp makes a private 0700 folder there


class Delivery(NamedTuple):
    """How the secret reaches the child. Make one with :func:`make_delivery`,
    which checks it; :func:`run_child` checks it again."""

    mode: str = "env"
    keep_env: tuple[str, ...] = ()


def make_delivery(mode: str = "env", keep_env: tuple[str, ...] = ()) -> Delivery:
    """A checked :class:`Delivery`: a mode kit knows and variables a job may
    be given, or UsageError."""
    return check_delivery(Delivery(mode, keep_env))


def check_delivery(d: Delivery) -> Delivery:
    """``d`` when its mode is one kit knows and each variable it keeps may be
    passed on, else UsageError."""
    if d.mode not in MODES:
        raise UsageError(
            f"delivery mode must be one of {', '.join(MODES)}, not {d.mode!r}"
        )
    for name in d.keep_env:
        if name in BASE_ENV:
            continue  # passed anyway
        try:
            check_env_name(name, "--keep-env")
        except FormatError as exc:
            raise UsageError(str(exc)) from None
    return d


def resolve(command: tuple[str, ...]) -> str:
    """The executable ``command[0]`` names, or DeniedError if there is none."""
    exe = shutil.which(command[0])
    if exe is None:
        raise DeniedError("command-not-found", f"command {command[0]!r} not found")
    return exe


def child_environment(keep: tuple[str, ...]) -> dict[bytes, bytes]:
    names = {n.encode() for n in (*BASE_ENV, *keep)}
    return {k: v for k, v in os.environb.items() if k in names or k.startswith(b"LC_")}


def no_core_dumps() -> None:
    """No core file for kit or anything it starts (the limit is inherited)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@contextlib.contextmanager
def _memfd(secret: bytes) -> Iterator[int]:
    fd = os.memfd_create("kit-secret", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, secret)
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_WRITE
            | fcntl.F_SEAL_GROW
            | fcntl.F_SEAL_SHRINK
            | fcntl.F_SEAL_SEAL,
        )
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _tmpfs_file(secret: bytes) -> Iterator[Path]:
    """The secret in a file of its own on tmpfs, for a caller that reserved
    none (the library's run_child without ``reserved``)."""
    with reserved_file(len(secret)) as path:
        yield _fill(path, secret)


@contextlib.contextmanager
def reserved_file(size: int = MAX_SECRET) -> Iterator[Path]:
    """An empty 0600 file in a fresh 0700 folder on tmpfs with ``size`` bytes
    already allocated, made before the use is counted: a tmpfs that is
    missing, read-only or full then refuses the run (``delivery-not-possible``,
    no use spent) instead of failing after the release. :func:`run_child`
    writes the secret into it; the folder is removed on leaving."""
    if not TMPFS.is_dir():
        raise DeniedError(
            "delivery-not-possible",
            f"--deliver file needs a tmpfs at {TMPFS}; none here",
        )
    _sweep_stale(TMPFS)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"kit-{os.getpid()}-", dir=TMPFS))
    except OSError as exc:
        raise DeniedError(
            "delivery-not-possible",
            f"--deliver file: cannot make a folder in {TMPFS} ({os_reason(exc)})",
        ) from None
    try:
        path = folder / "secret"
        try:
            fd = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
            )
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        except OSError as exc:
            raise DeniedError(
                "delivery-not-possible",
                f"--deliver file: cannot reserve {size} bytes in {TMPFS} "
                f"({os_reason(exc)})",
            ) from None
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fill(path: Path, secret: bytes) -> Path:
    """Write the secret into a file :func:`reserved_file` made (its space is
    allocated, so this does not run out of it)."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        view = memoryview(secret)
        while view:
            view = view[os.write(fd, view) :]
        os.ftruncate(fd, len(secret))
    finally:
        os.close(fd)
    return path


def _remove_reserved(path: Path) -> None:
    """The secret's file and its folder, made by :func:`reserved_file`."""
    with contextlib.suppress(OSError):
        path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def _sweep_stale(tmpfs: Path) -> None:
    """Remove secret folders left by a kit that was killed (SIGKILL leaves no
    chance to clean up): ours by owner, named after a process that is gone."""
    for folder in tmpfs.glob("kit-*-*"):
        try:
            pid = int(folder.name.split("-")[1])
            if folder.lstat().st_uid != os.getuid() or not folder.is_dir():
                continue
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):
            continue


def run_child(
    command: tuple[str, ...],
    env_name: str,
    secret: bytes,
    delivery: Delivery | None = None,
    on_start_error: Callable[[str], None] | None = None,
    reserved: Path | None = None,
) -> tuple[int, int]:
    """Run ``command`` with the secret; return (status, milliseconds).

    For file delivery, ``reserved`` is a file :func:`reserved_file` made
    before the use was counted; it is removed here as the child ends (and
    again, harmlessly, when the caller leaves reserved_file). Without one, a
    file is made here.

    Status is the child's exit code, or minus the signal number that ended it,
    127 when it cannot be found and 126 when it cannot be executed.
    """
    delivery = check_delivery(delivery or Delivery())
    no_core_dumps()
    env = child_environment(delivery.keep_env)
    name = env_name.encode()
    try:
        with contextlib.ExitStack() as stack:
            # From here on, an interrupt, hang-up or quit never ends kit with
            # the secret in a tmpfs file: before the child exists it unwinds
            # (removing the file), after it is passed on to the child, whose end
            # kit waits for as usual.
            signals = stack.enter_context(_Forwarding())
            pass_fds: tuple[int, ...] = ()
            stdin = None
            if delivery.mode == "env":
                env[name] = secret
            elif delivery.mode == "fd":
                fd = stack.enter_context(_memfd(secret))
                pass_fds = (fd,)
                env[name + b"_FD"] = str(fd).encode()
            elif delivery.mode == "file":
                if reserved is not None:
                    # Removed here, while signals are still passed on, not
                    # only by the caller after the exit receipt.
                    stack.callback(_remove_reserved, reserved)
                    path = _fill(reserved, secret)
                else:
                    path = stack.enter_context(_tmpfs_file(secret))
                env[name + b"_FILE"] = os.fsencode(path)
            else:
                stdin = subprocess.PIPE
            start = time.monotonic()
            signals.check()
            try:
                child = subprocess.Popen(
                    list(command),
                    env=env,
                    close_fds=True,
                    pass_fds=pass_fds,
                    stdin=stdin,
                )
                signals.started(child)
            except (FileNotFoundError, PermissionError, OSError) as exc:
                if on_start_error is not None:
                    why = exc.strerror
                    on_start_error(f"{command[0]} could not be started: {why}")
                return (127 if isinstance(exc, FileNotFoundError) else 126), 0
            finally:
                env.clear()
            if child.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    child.stdin.write(secret)
                with contextlib.suppress(BrokenPipeError):
                    child.stdin.close()
            status = child.wait()
    except Interrupted as exc:
        if on_start_error is not None:
            on_start_error(
                f"{command[0]} was not started: signal {exc.signum} came first"
            )
        return -exc.signum, 0
    return status, int((time.monotonic() - start) * 1000)


# What a terminal, a closed session or a supervisor sends to stop a job.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class Interrupted(Exception):
    """A FORWARDED signal arrived before the child was started."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum} before the command started")
        self.signum = signum


class _Forwarding:
    """Pass FORWARDED signals on to the child once there is one. One that
    arrives before is only noted (a handler never raises: an exception out
    of one could surface anywhere, even inside Popen after the child was
    started): :meth:`check` raises :class:`Interrupted` for it before the
    child is started, and :meth:`started` passes it on to a child started
    meanwhile. Signals ignored when kit started (``nohup``, a shell's
    background job) stay ignored, for kit and for the child. The previous
    handlers come back on leaving."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.pending: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.child is None:
            self.pending = self.pending or signum
        else:
            self.child.send_signal(signum)

    def check(self) -> None:
        """Raise Interrupted for a signal noted before the child started."""
        if self.pending is not None:
            raise Interrupted(self.pending)

    def started(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child
        if self.pending is not None:  # came while Popen ran
            child.send_signal(self.pending)

    def __enter__(self) -> _Forwarding:
        for s in FORWARDED:
            if signal.getsignal(s) is signal.SIG_IGN:
                continue
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
