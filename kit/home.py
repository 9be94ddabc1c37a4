"""Kit homes: one folder per role (signer, host), marked with its kind so a
command run against the wrong home fails clearly."""

from __future__ import annotations

import os
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


def create_home(path: Path, kind: str) -> None:
    check_new_home(path)
    ensure_private_dir(path)
    atomic_write(path / MARKER, f"{kind}\n".encode(), 0o600)


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
