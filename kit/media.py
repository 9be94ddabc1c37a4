"""Folders standing for removable media, guarded by a SHA256SUMS manifest.

Reading trusts nothing on the media: only regular files listed in the
manifest, with matching digests, are returned; anything else present is
refused by name. File times and directory order are never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from kit.errors import FormatError, MediaError, media_mismatch
from kit.formats import manifest
from kit.fsutil import atomic_write, os_reason, output_folder, read_regular

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


def _strays(
    folder: Path, entries: dict[str, str], incoming: frozenset[str] = frozenset()
) -> Iterator[tuple[str, str]]:
    """Yield (entry path, why) for each folder entry a reader refuses: a
    symbolic link, anything not a regular file, a file the manifest does not
    list (unless it is in ``incoming``, about to be written and listed), or
    two names that differ only by case. The manifest itself is not an entry."""
    seen: dict[str, str] = {}
    try:
        found = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise MediaError(
            f"{folder}: cannot list the folder ({os_reason(exc)})"
        ) from None
    for entry in found:
        if entry.name == manifest.NAME:
            continue
        if entry.is_symlink():
            yield entry.path, "is a symbolic link"
        elif not entry.is_file(follow_symlinks=False):
            yield entry.path, "not a regular file"
        elif entry.name not in entries and entry.name not in incoming:
            yield entry.path, f"not listed in {manifest.NAME}"
        elif entry.name.lower() in seen:
            yield entry.path, f"collides with {seen[entry.name.lower()]} by case"
        seen.setdefault(entry.name.lower(), entry.name)


def _check_listed(folder: Path, entries: dict[str, str], keep: list[str]) -> None:
    """Refuse, naming it, a listed file (one this write leaves in place) that
    is missing or no longer matches its manifest digest."""
    for name in keep:
        try:
            data = read_regular(folder / name, FILE_CAP, "media file")
        except (MediaError, FormatError) as exc:
            raise MediaError(f"{exc}; nothing written") from None
        if hashlib.sha256(data).hexdigest() != entries[name]:
            raise MediaError(
                f"{folder / name}: does not match its digest in {manifest.NAME}, "
                "so a reader would refuse this folder; nothing written"
            )


def write_media(folder: Path, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` atomically and extend the folder's manifest.

    Before any byte is written, the folder must hold nothing a reader
    (:func:`read_media`) would refuse: only kit's own files, listed in its
    SHA256SUMS (a file of the same name as one written now is replaced). A
    folder also holding, say, ``System Volume Information``, ``.Trash-1000`` or
    an unlisted ``notes.txt`` is refused (MediaError naming them): writing
    there would make media that kit then refuses to read.
    """
    output_folder(folder)
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
    strays = list(_strays(folder, entries, frozenset(files)))
    if strays:
        shown = "; ".join(f"{Path(p).name} ({why})" for p, why in strays[:5])
        more = f"; and {len(strays) - 5} more" if len(strays) > 5 else ""
        raise MediaError(
            f"{folder}: holds {len(strays)} entr{'y' if len(strays) == 1 else 'ies'} "
            f"kit would refuse when reading it back: {shown}{more}; nothing "
            f"written. Write to an empty subfolder instead (e.g. {folder / 'kit'})"
        )
    _check_listed(folder, entries, sorted(set(entries) - set(files)))
    written = []
    new = [folder / n for n in sorted(files) if n not in entries]
    # The listed files about to be replaced (a re-signed revocations.kit, a
    # bundle approved in place), kept to be put back should the write fail.
    replaced = {
        n: read_regular(folder / n, FILE_CAP, "media file")
        for n in sorted(files)
        if n in entries
    }
    try:
        for name, data in sorted(files.items()):
            atomic_write(folder / name, data)
            entries[name] = hashlib.sha256(data).hexdigest()
            written.append(folder / name)
        atomic_write(folder / manifest.NAME, manifest.render(entries))
    except MediaError:
        # A full or pulled stick half-way: the files this call added are
        # removed and those it replaced put back as they were, so the folder
        # still matches its manifest (read_media, and the next write, would
        # refuse it otherwise, as if it had been tampered with).
        for path in new:
            with contextlib.suppress(OSError):
                path.unlink()
        for name, data in replaced.items():
            with contextlib.suppress(MediaError):
                atomic_write(folder / name, data)
        raise
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
    for path, why in _strays(folder, entries):
        raise media_mismatch(f"{path}: {why}; refused")
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
            raise media_mismatch(
                f"{folder / name}: SHA-256 {got[:16]}... does not match "
                f"the manifest's {digest[:16]}...; refused",
                evidence=data,
            )
        out[name] = data
    return out
