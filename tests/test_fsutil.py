"""Writes that the OS refuses (a read-only stick or home, a full disk) end in
a MediaError naming the path and the OS's reason, exit 4, never an internal
error; a failed clean-up never hides the first error; nothing is lost."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import KIT, World

import kit.fsutil
from kit.errors import HomeError, MediaError
from kit.fsutil import atomic_write, ensure_private_dir, fsync_dir
from kit.media import read_media, write_media


def _erofs(*_: Any, **__: Any) -> Any:
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


@pytest.mark.parametrize("step", ["open", "write", "fsync", "replace"])
def test_each_failing_step_is_a_media_error_naming_path_and_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    target = tmp_path / "bundle-a.kit"
    target.write_bytes(b"the old copy")
    monkeypatch.setattr(os, step, _erofs)
    with pytest.raises(MediaError) as err:
        atomic_write(target, b"the new copy")
    monkeypatch.undo()
    assert str(err.value) == f"cannot write {target}: read-only file system"
    assert target.read_bytes() == b"the old copy"  # never half replaced
    assert _leftovers(tmp_path) == []  # the temporary file is gone


def test_clean_up_that_fails_too_does_not_hide_the_first_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tester's case: on a read-only stick the unlink of the temporary
    file fails as well, and used to escape as a bare OSError (exit 70)."""
    target = tmp_path / "revocations.kit"
    monkeypatch.setattr(os, "replace", _erofs)
    monkeypatch.setattr(os, "unlink", _erofs)
    with pytest.raises(MediaError, match="read-only file system") as err:
        atomic_write(target, b"data")
    monkeypatch.undo()
    assert str(target) in str(err.value)
    assert not target.exists()


def test_a_temporary_file_it_did_not_create_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "x.kit"
    stale = tmp_path / f".x.kit.tmp-{os.getpid()}"
    stale.write_bytes(b"someone else's")
    with pytest.raises(MediaError, match="file exists"):
        atomic_write(target, b"data")
    assert stale.read_bytes() == b"someone else's"
    assert not target.exists()


def test_folder_sync_and_private_folder_failures_name_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MediaError, match=r"cannot sync folder .*: no such file"):
        fsync_dir(tmp_path / "absent")
    monkeypatch.setattr(os, "fsync", _erofs)
    with pytest.raises(MediaError) as err:
        fsync_dir(tmp_path)
    assert str(err.value) == f"cannot sync folder {tmp_path}: read-only file system"
    monkeypatch.undo()
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(
        HomeError, match=re.escape(f"cannot create folder {blocker}/inbox: ")
    ):
        ensure_private_dir(blocker / "inbox")


def test_media_write_on_a_read_only_stick_keeps_the_old_media(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "usb"
    write_media(folder, {"bundle-a.kit": b"alpha"})
    real_open = os.open

    def open_(path: Any, flags: int, *a: Any) -> int:
        if flags & os.O_CREAT:  # reading works, creating does not
            _erofs()
        return real_open(path, flags, *a)

    monkeypatch.setattr(kit.fsutil.os, "open", open_)
    with pytest.raises(MediaError, match=r"bundle-b\.kit: read-only file system"):
        write_media(folder, {"bundle-b.kit": b"bravo"})
    monkeypatch.undo()
    assert read_media(folder) == {"bundle-a.kit": b"alpha"}


# -- real read-only mounts, through the real CLI --------------------------------


def _read_only(
    world: World, folder: Path, *args: str | Path
) -> subprocess.CompletedProcess[bytes]:
    """Run ``kit ARGS`` with ``folder`` bind-mounted read-only in a private
    mount namespace (needs root, as the rest of the suite's namespace tests)."""
    if subprocess.run(["unshare", "-m", "true"], check=False).returncode != 0:
        pytest.skip("needs root for a private mount namespace (unshare -m)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["KIT_PASSPHRASE_FILE"] = str(world.passfile)
    script = (
        f'mount --bind "{folder}" "{folder}" && '
        f'mount -o remount,bind,ro "{folder}" && exec "$@"'
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(KIT), *map(str, args)],
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=60,
    )


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_export_to_a_read_only_stick_exits_4_naming_it(
    world: World, tmp_path: Path
) -> None:
    usb = tmp_path / "usb"
    done = world.kit("export", "--home", world.signer_home, "--to", usb)
    assert done.returncode == 0, done.stderr
    before = _snapshot(usb)
    proc = _read_only(world, usb, "export", "--home", world.signer_home, "--to", usb)
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    assert f"cannot write {usb}/" in err and "read-only file system" in err
    assert "internal error" not in err and "Traceback" not in err
    assert _snapshot(usb) == before


def test_import_into_a_read_only_inbox_exits_4_naming_it(
    world: World, tmp_path: Path
) -> None:
    issued = world.issue()
    usb = tmp_path / "usb"
    write_media(
        usb,
        {
            "trust-root.kit": world.root_bytes,
            f"bundle-{issued.claims.bundle_id}.kit": issued.data,
        },
    )
    home = world.host_home("build-01")
    inbox = home / "inbox"
    proc = _read_only(world, inbox, "import", usb, "--home", home)
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    assert f"cannot write {inbox}/{issued.claims.bundle_id}.kit" in err
    assert "read-only file system" in err
    assert "internal error" not in err and "Traceback" not in err
    assert list(inbox.iterdir()) == []
    (denial,) = world.receipts()
    assert (denial.action, denial.reason) == ("import", "unreadable")


def test_atomic_write_replaces_only_regular_files(tmp_path: Path) -> None:
    """--force (or root) must never turn a link, FIFO or device into a file."""
    import stat as st

    from kit.errors import MediaError
    from kit.fsutil import atomic_write

    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link = tmp_path / "link"
    link.symlink_to(victim)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    for path, kind in ((link, "a symbolic link"), (fifo, "a FIFO"),
                       (folder, "a folder")):  # fmt: skip
        before = os.lstat(path)
        with pytest.raises(MediaError, match=f"it is {kind}, not a regular file"):
            atomic_write(path, b"new")
        after = os.lstat(path)
        assert (st.S_IFMT(after.st_mode), after.st_ino) == (
            st.S_IFMT(before.st_mode),
            before.st_ino,
        )
    assert victim.read_bytes() == b"keep"
    atomic_write(victim, b"new")  # a regular file is replaced
    assert victim.read_bytes() == b"new"
    if os.geteuid() == 0:  # a device node, as root could make one
        dev = tmp_path / "null"
        os.mknod(dev, 0o600 | st.S_IFCHR, os.makedev(1, 3))
        with pytest.raises(MediaError, match="it is a device"):
            atomic_write(dev, b"new")
        assert st.S_ISCHR(os.lstat(dev).st_mode)
