"""Folders standing for removable media, guarded by a SHA256SUMS manifest.

Reading trusts nothing on the media: only regular files listed in the
manifest, with matching digests, are returned; anything else present is
refused by name. File times and directory order are never used.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from kit.errors import FormatError, MediaError
from kit.formats import manifest
from kit.fsutil import atomic_write, read_regular

FILE_CAP = 64 * 1024 * 1024
TOTAL_CAP = 256 * 1024 * 1024


def _check_folder(folder: Path) -> None:
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        raise MediaError(f"{folder}: no such folder") from None
    if stat.S_ISLNK(st.st_mode):
        raise MediaError(f"{folder}: is a symbolic link; refused")
    if not stat.S_ISDIR(st.st_mode):
        raise MediaError(f"{folder}: not a folder")


def _read_manifest(folder: Path) -> dict[str, str]:
    path = folder / manifest.NAME
    if not os.path.lexists(path):
        return {}
    try:
        return manifest.parse(read_regular(path, manifest.CAP, "manifest"))
    except FormatError as exc:
        raise MediaError(f"{path}: {exc}") from None


def write_media(folder: Path, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` atomically and extend the folder's manifest."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MediaError(
            f"{folder}: cannot create the folder ({exc.strerror})"
        ) from None
    _check_folder(folder)
    entries = _read_manifest(folder)
    taken = {n.lower(): n for n in entries}
    # Check every name before writing any file: a refusal half-way would leave
    # files the manifest does not list, and read_media refuses such media.
    for name in sorted(files):
        if not manifest.FILE_RE.fullmatch(name):
            raise MediaError(f"refusing to write unsafe file name {name!r}")
        clash = taken.get(name.lower())
        if clash is not None and clash != name:
            raise MediaError(f"{name} collides with {clash} on case-insensitive media")
        taken[name.lower()] = name
    written = []
    for name, data in sorted(files.items()):
        atomic_write(folder / name, data)
        entries[name] = hashlib.sha256(data).hexdigest()
        written.append(folder / name)
    atomic_write(folder / manifest.NAME, manifest.render(entries))
    return written


def read_media(
    folder: Path, cap_for: Callable[[str], int] | None = None
) -> dict[str, bytes]:
    """Return every file the manifest lists, after checking each digest.

    Raises MediaError naming the offending path: no manifest, a file not in
    the manifest, a missing file, a digest mismatch, a symlink, a FIFO or other
    non-regular entry, or two names that differ only by case.
    """
    _check_folder(folder)
    if not os.path.lexists(folder / manifest.NAME):
        raise MediaError(f"{folder}: no {manifest.NAME} manifest; refused")
    entries = _read_manifest(folder)
    seen: dict[str, str] = {}
    for entry in os.scandir(folder):
        if entry.name == manifest.NAME:
            continue
        if entry.is_symlink():
            raise MediaError(f"{entry.path}: is a symbolic link; refused")
        if not entry.is_file(follow_symlinks=False):
            raise MediaError(f"{entry.path}: not a regular file; refused")
        if entry.name not in entries:
            raise MediaError(f"{entry.path}: not listed in {manifest.NAME}; refused")
        other = seen.get(entry.name.lower())
        if other is not None:
            raise MediaError(f"{entry.path}: collides with {other} by case; refused")
        seen[entry.name.lower()] = entry.name
    out: dict[str, bytes] = {}
    total = 0
    for name, digest in sorted(entries.items()):
        # Each file's cap is decided by its name before a byte is read, and
        # the whole read is bounded too.
        cap = cap_for(name) if cap_for is not None else FILE_CAP
        data = read_regular(folder / name, cap, "media file")
        total += len(data)
        if total > TOTAL_CAP:
            raise MediaError(f"{folder}: more than {TOTAL_CAP} bytes of media; refused")
        got = hashlib.sha256(data).hexdigest()
        if got != digest:
            raise MediaError(
                f"{folder / name}: SHA-256 {got[:16]}... does not match "
                f"the manifest's {digest[:16]}...; refused"
            )
        out[name] = data
    return out
