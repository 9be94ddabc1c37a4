"""Kit homes: one folder per role (signer, host), marked with its kind so a
command run against the wrong home fails clearly."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from kit.errors import HomeError
from kit.fsutil import atomic_write, ensure_private_dir

MARKER = "KIT-HOME"
KINDS = ("signer", "host", "approver", "auditor")


def default_home() -> Path:
    env = os.environ.get("KIT_HOME")
    if env:
        return Path(env)
    import platformdirs  # only here: every other path has a --home or KIT_HOME

    return Path(platformdirs.user_data_dir("kit", appauthor=False))


def check_new_home(path: Path) -> None:
    """Refuse a folder that cannot become a new home (it holds a home or other
    files), so that a command can say so before it asks for a passphrase."""
    if (path / MARKER).exists():
        raise HomeError(
            f"{path} is already a kit {read_kind(path)} home; choose another --home"
        )
    try:
        taken = path.exists() and any(path.iterdir())
    except OSError as exc:
        why = exc.strerror or exc
        raise HomeError(f"{path}: {why}; choose another --home") from None
    if taken:
        raise HomeError(f"{path} exists and is not empty; choose another --home")


@contextlib.contextmanager
def new_home(path: Path, kind: str) -> Iterator[None]:
    """Make a home of ``kind`` at ``path`` (absent or an empty folder): the
    body writes its files; the marker that makes it a home is written last.
    Should the body fail or be interrupted (Ctrl-C, a full disk), what it
    wrote is removed, so the same init can simply be run again."""
    check_new_home(path)
    existed = path.exists()
    ensure_private_dir(path)
    try:
        yield
        atomic_write(path / MARKER, f"{kind}\n".encode(), 0o600)
    except BaseException:  # Ctrl-C too: clean up, then re-raise as it came
        if existed:  # the folder was there, empty: leave it so
            for entry in path.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        entry.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)
        raise


def read_kind(path: Path) -> str:
    try:
        kind = (path / MARKER).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise HomeError(
            f"{path} is not a kit home (run 'kit signer init' or "
            "'kit host init' first, or pass --home)"
        ) from None
    if kind not in KINDS:
        raise HomeError(f"{path}/{MARKER} names an unknown kind {kind[:20]!r}")
    return kind


def require_kind(path: Path, kind: str) -> None:
    got = read_kind(path)
    if got != kind:
        raise HomeError(
            f"{path} is a kit {got} home; this command needs a {kind} "
            "home (pass --home)"
        )
