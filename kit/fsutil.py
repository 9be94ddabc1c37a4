"""File handling for homes and media: bounded reads of regular files only,
atomic durable writes (temp file, fsync, rename, directory fsync)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from kit.errors import FormatError, HomeError, MediaError


def read_regular(path: Path, cap: int, what: str) -> bytes:
    """Read a regular file without following a final symlink (MediaError),
    refusing FIFOs and devices and anything over ``cap`` bytes before reading
    it (FormatError: neither can hold a valid object). On removable media
    the same FIFO is a MediaError instead (kit/media.py): there it makes the
    medium itself unfit, whatever the object named."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MediaError(f"{what} {path}: no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the final component is a symlink
            raise MediaError(f"{what} {path}: is a symbolic link; refused") from None
        raise MediaError(f"{what} {path}: cannot open ({os_reason(exc)})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device holds no valid object
            raise FormatError(f"{what} {path}: not a regular file; refused")
        if st.st_size > cap:  # too large to be valid: malformed, not an I/O fault
            raise FormatError(
                f"{what} {path}: {st.st_size} bytes, over the {cap}-byte cap"
            )
        chunks = []
        remaining = cap + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > cap:
            raise FormatError(f"{what} {path}: grew past the {cap}-byte cap while read")
        return data
    except OSError as exc:
        raise MediaError(f"{what} {path}: read failed ({os_reason(exc)})") from None
    finally:
        os.close(fd)


def os_reason(exc: OSError) -> str:
    """The OS's reason in words, e.g. "read-only file system", "no space left
    on device" (never the whole exception: it may repeat a path twice)."""
    return (exc.strerror or type(exc).__name__).lower()


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable; MediaError names the folder and the
    OS's reason when the folder cannot be opened or synced."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise MediaError(f"cannot sync folder {path}: {os_reason(exc)}") from None
    try:
        os.fsync(fd)
    except OSError as exc:
        raise MediaError(f"cannot sync folder {path}: {os_reason(exc)}") from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "a socket or other special file"


def check_replaceable(path: Path) -> None:
    """MediaError unless ``path`` is absent or a regular file: what a write
    by rename may replace."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise MediaError(f"cannot write {path}: {os_reason(exc)}") from None
    if not stat.S_ISREG(found.st_mode):
        raise MediaError(
            f"cannot write {path}: it is {_kind(found.st_mode)}, not a regular "
            "file; kit replaces only regular files"
        )


def output_folder(folder: Path) -> None:
    """Create ``folder`` for output if needed, but never its parents: a
    missing parent is most often media that is not mounted, and writing to
    the local disk instead would look like success. MediaError says so."""
    try:
        folder.mkdir(exist_ok=True)
    except FileNotFoundError:
        raise MediaError(
            f"{folder}: its parent folder {folder.parent} does not exist (is the "
            "media mounted?); nothing written"
        ) from None
    except OSError as exc:
        raise MediaError(
            f"{folder}: cannot create the folder ({os_reason(exc)})"
        ) from None


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically and durably, then read it back.

    Any OS failure (a read-only file system, a full or pulled stick) raises
    MediaError naming ``path`` and the OS's reason; the temporary file is then
    removed if possible, and a failure to remove it (on a read-only file
    system, say) never hides the first error. ``path`` itself is untouched
    unless the rename happened. Only a regular file is ever replaced: a
    symbolic link, device, FIFO or socket at ``path`` is refused (the
    rename would put a file in its place, and ``--force`` or root must not
    turn /dev/null or a link into one).
    """
    check_replaceable(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    created = False
    try:
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            mode,
        )
        created = True
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        created = False
    except OSError as exc:
        if created:  # never remove a file this call did not create
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise MediaError(f"cannot write {path}: {os_reason(exc)}") from None
    fsync_dir(path.parent)
    if read_regular(path, len(data), "written file") != data:
        raise MediaError(f"{path}: read-back differs from what was written")


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (mode 700) if needed; HomeError names the folder and the
    OS's reason when it cannot be created or restricted."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise HomeError(f"cannot create folder {path}: {os_reason(exc)}") from None


def check_private(path: Path) -> None:
    """Refuse a private file that group or others can read (a careless copy)."""

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise HomeError(f"{path} is missing") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise HomeError(f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise HomeError(
            f"{path} has mode {st.st_mode & 0o777:o}; it must be 600 (chmod 600 {path})"
        )


def check_not_writable_by_others(path: Path) -> None:
    """Refuse a home folder or file that group or others may change (a loosened
    policy, a swapped trust root or a reset journal would follow)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise HomeError(f"{path} is missing") from None
    if stat.S_ISLNK(st.st_mode):
        raise HomeError(f"{path} is a symbolic link")
    if st.st_mode & 0o022:
        raise HomeError(
            f"{path} has mode {st.st_mode & 0o777:o}; group and others must not be "
            f"able to write it (chmod go-w {path})"
        )
