"""Media folders: only manifest-listed regular files with matching digests are
read; writes use safe names only; import stages everything or nothing."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import T0, TASK, World, child_argv
from hypothesis import given
from hypothesis import strategies as st

from kit.errors import FormatError, KitError, MediaError, UnauthenticatedError
from kit.formats import manifest
from kit.media import read_media, write_media

FILES = {"bundle-a.kit": b"alpha", "bundle-b.kit": b"bravo"}


@pytest.fixture
def media(tmp_path: Path) -> Path:
    folder = tmp_path / "usb"
    write_media(folder, FILES)
    return folder


def test_round_trip_with_manifest(media: Path) -> None:
    sums = manifest.parse((media / manifest.NAME).read_bytes())
    assert sums == {n: hashlib.sha256(d).hexdigest() for n, d in FILES.items()}
    assert read_media(media) == FILES
    # Writing more extends the manifest; earlier files stay listed.
    write_media(media, {"bundle-c.kit": b"charlie"})
    assert read_media(media) == FILES | {"bundle-c.kit": b"charlie"}


def test_missing_manifest_is_refused(media: Path) -> None:
    (media / manifest.NAME).unlink()
    with pytest.raises(MediaError, match="no SHA256SUMS"):
        read_media(media)


def _unlisted(m: Path) -> None:
    (m / "extra.kit").write_bytes(b"slipped in")


def _digest_mismatch(m: Path) -> None:
    (m / "bundle-a.kit").write_bytes(b"alphA")


def _same_size_flip(m: Path) -> None:
    data = bytearray((m / "bundle-b.kit").read_bytes())
    data[0] ^= 1
    (m / "bundle-b.kit").write_bytes(bytes(data))


def _symlink_listed(m: Path) -> None:
    # The link's target has exactly the listed content: the link itself is refused.
    target = m.parent / "elsewhere"
    target.write_bytes(FILES["bundle-a.kit"])
    (m / "bundle-a.kit").unlink()
    (m / "bundle-a.kit").symlink_to(target)


def _symlink_unlisted(m: Path) -> None:
    (m / "passwd.kit").symlink_to("/etc/passwd")


def _fifo(m: Path) -> None:
    os.mkfifo(m / "pipe.kit")


def _fifo_listed(m: Path) -> None:
    (m / "bundle-a.kit").unlink()
    os.mkfifo(m / "bundle-a.kit")


def _subfolder(m: Path) -> None:
    (m / "sub").mkdir()


def _missing_listed(m: Path) -> None:
    (m / "bundle-b.kit").unlink()


def _case_collision(m: Path) -> None:
    # Two names for one file on case-insensitive media.
    (m / "BUNDLE-A.kit").write_bytes(FILES["bundle-a.kit"])


def _manifest_symlink(m: Path) -> None:
    real = m.parent / "sums"
    real.write_bytes((m / manifest.NAME).read_bytes())
    (m / manifest.NAME).unlink()
    (m / manifest.NAME).symlink_to(real)


def _manifest_garbage(m: Path) -> None:
    (m / manifest.NAME).write_bytes(b"not a manifest\n")


def _manifest_path_traversal(m: Path) -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    with (m / manifest.NAME).open("ab") as f:
        f.write(f"{digest}  ../outside\n".encode())


TAMPER: dict[str, tuple[Callable[[Path], None], str]] = {
    "file-not-in-manifest": (_unlisted, "extra.kit: not listed"),
    "digest-mismatch": (_digest_mismatch, "bundle-a.kit: SHA-256"),
    "same-size-flip": (_same_size_flip, "bundle-b.kit: SHA-256"),
    "symlink-listed": (_symlink_listed, "bundle-a.kit: is a symbolic link"),
    "symlink-unlisted": (_symlink_unlisted, "passwd.kit: is a symbolic link"),
    "fifo-unlisted": (_fifo, "pipe.kit: not a regular file"),
    "fifo-listed": (_fifo_listed, "bundle-a.kit: not a regular file"),
    "subfolder": (_subfolder, "sub: not a regular file"),
    "missing-listed-file": (_missing_listed, "bundle-b.kit: no such file"),
    "case-collision": (_case_collision, "BUNDLE-A.kit"),
    "manifest-symlink": (_manifest_symlink, "symbolic link"),
    "manifest-garbage": (_manifest_garbage, "line 1"),
    "manifest-path-traversal": (_manifest_path_traversal, "SHA256SUMS line 3"),
}


@pytest.mark.parametrize("name", sorted(TAMPER))
def test_tampered_media_is_refused(media: Path, name: str) -> None:
    tamper, why = TAMPER[name]
    tamper(media)
    with pytest.raises(MediaError) as err:
        read_media(media)
    assert why in str(err.value)


def test_symlinked_folder_is_refused(media: Path, tmp_path: Path) -> None:
    link = tmp_path / "usb-link"
    link.symlink_to(media)
    with pytest.raises(MediaError, match="symbolic link"):
        read_media(link)
    with pytest.raises(MediaError, match="symbolic link"):
        write_media(link, {"x.kit": b"x"})
    assert not (media / "x.kit").exists()


def test_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"")
    with pytest.raises(MediaError, match="not a folder"):
        read_media(f)
    with pytest.raises(MediaError, match="no such folder"):
        read_media(tmp_path / "absent")


UNSAFE = [
    "../escape.kit",
    "sub/file.kit",
    "/etc/cron.d/x",
    ".hidden",
    "",
    "Upper.kit",
    "SHA256SUMS",
    "space name.kit",
    "-dash.kit",
    "x" * 101,
    "nul\x00.kit",
    "é.kit",
]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_refused_on_write(media: Path, name: str) -> None:
    before = sorted(p.name for p in media.iterdir())
    sums = (media / manifest.NAME).read_bytes()
    with pytest.raises(MediaError, match="unsafe file name"):
        # A safe name alongside: nothing at all may be written.
        write_media(media, {"aaa-first.kit": b"1", name: b"2", "zzz-last.kit": b"3"})
    assert sorted(p.name for p in media.iterdir()) == before
    assert (media / manifest.NAME).read_bytes() == sums
    assert read_media(media) == FILES
    assert not (media.parent / "escape.kit").exists()


# -- kit import: all or nothing -------------------------------------------------


def _import_media(world: World, folder: Path, extra: dict[str, bytes]) -> list[str]:
    """Media with the trust root, two genuine bundles and ``extra``."""
    good = [world.issue(), world.issue()]
    files = {"trust-root.kit": world.root_bytes}
    files |= {f"bundle-{i.claims.bundle_id}.kit": i.data for i in good}
    write_media(folder, files | extra)
    return sorted(i.claims.bundle_id for i in good)


def _inbox(world: World) -> list[str]:
    return sorted(p.name for p in (world.host_home("build-01") / "inbox").iterdir())


def _bad_files(world: World) -> dict[str, dict[str, bytes]]:
    genuine = world.issue().data
    return {
        "untrusted-signer": {"bundle-x.kit": world.issue(by=world.attacker).data},
        "truncated-bundle": {"bundle-x.kit": genuine[:-1]},
        "flipped-byte": {
            "bundle-x.kit": genuine[:100] + bytes([genuine[100] ^ 4]) + genuine[101:]
        },
        "foreign-trust-root": {
            "trust-root-2.kit": (world.attacker_home / "trust-root.kit").read_bytes()
        },
        "not-a-kit-file": {"notes.txt": b"hello"},
    }


@pytest.mark.parametrize(
    ("bad", "kind", "reason"),
    [
        ("untrusted-signer", UnauthenticatedError, "unauthenticated"),
        ("truncated-bundle", FormatError, "malformed"),
        ("flipped-byte", UnauthenticatedError, "unauthenticated"),
        ("foreign-trust-root", FormatError, "malformed"),
        ("not-a-kit-file", MediaError, "unreadable"),
    ],
)
def test_import_is_all_or_nothing(
    world: World, tmp_path: Path, bad: str, kind: type[KitError], reason: str
) -> None:
    """A refused import keeps the kind of its cause (so kit verify's exit
    code), stages nothing and leaves a denial receipt (action "import") with
    the digest of the refused file."""
    folder = tmp_path / "usb"
    files = _bad_files(world)[bad]
    _import_media(world, folder, files)
    host = world.host()
    try:
        with pytest.raises(kind, match="nothing imported") as err:
            host.import_media(folder, now=T0)
    finally:
        host.close()
    assert _inbox(world) == []
    (denial,) = world.receipts()
    assert (denial.event, denial.action, denial.reason) == ("deny", "import", reason)
    assert denial.detail == str(err.value)
    # A chain of roots names no single file; a name kit does not import is
    # refused before its bytes are read.
    if bad not in ("foreign-trust-root", "not-a-kit-file"):
        ((_, refused),) = files.items()
        assert denial.bundle_digest == hashlib.sha256(refused).digest()


def test_import_stages_every_bundle(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "usb"
    ids = _import_media(world, folder, {})
    host = world.host()
    try:
        staged = host.import_media(folder, now=T0).staged
    finally:
        host.close()
    assert sorted(v.claims.bundle_id for v in staged) == ids
    assert _inbox(world) == [f"{b}.kit" for b in ids]


def test_cli_import_is_all_or_nothing(world: World, tmp_path: Path) -> None:
    home = world.host_home("build-01")
    bad = tmp_path / "bad"
    _import_media(world, bad, _bad_files(world)["untrusted-signer"])
    proc = world.kit("import", bad, "--home", home)
    assert proc.returncode == 1, proc.stderr  # as kit verify of the same bundle
    assert b"nothing imported" in proc.stderr
    assert _inbox(world) == []
    assert [r.action for r in world.receipts()] == ["import"]

    tampered = tmp_path / "tampered"
    _import_media(world, tampered, {})
    victim = next(tampered.glob("bundle-*.kit"))
    data = victim.read_bytes()
    victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    proc = world.kit("import", tampered, "--home", home)
    assert proc.returncode == 4, proc.stderr
    assert b"does not match the manifest" in proc.stderr
    assert _inbox(world) == []
    # The auditor tells a tampered stick from a mistyped folder: its own
    # reason, and the digest of the file as it was found.
    denial = world.receipts()[-1]
    assert (denial.action, denial.reason) == ("import", "media-mismatch")
    assert denial.bundle_digest == hashlib.sha256(victim.read_bytes()).digest()
    (tampered / "extra.kit").write_bytes(b"x")
    proc = world.kit("import", tampered, "--home", home)
    assert proc.returncode == 4 and b"not listed in SHA256SUMS" in proc.stderr
    assert world.receipts()[-1].reason == "media-mismatch"
    proc = world.kit("import", tmp_path / "no-such-stick", "--home", home)
    assert proc.returncode == 4, proc.stderr
    denial = world.receipts()[-1]
    assert (denial.reason, denial.bundle_digest) == (
        "unreadable",
        hashlib.sha256(b"").digest(),
    )

    good = tmp_path / "good"
    ids = _import_media(world, good, {})
    proc = world.kit("import", good, "--home", home, "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(b["bundle_id"] for b in json.loads(proc.stdout)) == ids
    assert _inbox(world) == [f"{b}.kit" for b in ids]


# -- hardening (issue 9): devices, untouched media, durable writes ------------


def _device(m: Path) -> None:
    os.mknod(m / "bundle-a.kit.dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))


def _device_listed(m: Path) -> None:
    (m / "bundle-a.kit").unlink()
    os.mknod(m / "bundle-a.kit", 0o600 | stat.S_IFCHR, os.makedev(1, 3))


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (_device, "bundle-a.kit.dev: not a regular file"),
        (_device_listed, "bundle-a.kit: not a regular file"),
    ],
    ids=["device-unlisted", "device-listed"],
)
def test_device_file_is_refused_naming_it(
    media: Path, tamper: Callable[[Path], None], why: str
) -> None:
    tamper(media)  # /dev/null's numbers: reading it would "succeed" empty
    with pytest.raises(MediaError) as err:
        read_media(media)
    assert str(media) in str(err.value) and why in str(err.value)


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every entry's mode, size, mtime and content (atime is not compared:
    a read may update it, and nothing trusts it)."""
    out = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        st = entry.stat(follow_symlinks=False)
        data = Path(entry.path).read_bytes() if entry.is_file() else b""
        out[entry.name] = (st.st_mode, st.st_size, st.st_mtime_ns, data)
    return out


def test_reading_media_modifies_nothing(world: World, tmp_path: Path) -> None:
    good = tmp_path / "good"
    _import_media(world, good, {})
    bad = tmp_path / "bad"
    _import_media(world, bad, _bad_files(world)["untrusted-signer"])
    before = {f: (_snapshot(f), os.stat(f).st_mtime_ns) for f in (good, bad)}
    read_media(good)
    host = world.host()
    try:
        host.import_media(good, now=T0)
        with pytest.raises(UnauthenticatedError):
            host.import_media(bad, now=T0)
    finally:
        host.close()
    for folder in (good, bad):  # and through the CLI, refused or not
        world.kit("import", folder, "--home", world.host_home("build-01"))
    after = {f: (_snapshot(f), os.stat(f).st_mtime_ns) for f in (good, bad)}
    assert after == before


def test_file_times_on_media_are_never_trusted(media: Path) -> None:
    """FAT keeps local time at 2 s resolution: any times read the same."""
    for path in media.iterdir():
        os.utime(path, (0, 0))
    assert read_media(media) == FILES
    for path in media.iterdir():
        os.utime(path, (4_000_000_000, 4_000_000_000))
    assert read_media(media) == FILES


def test_write_is_temp_fsync_rename_dir_fsync_then_read_back(
    media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_open = os.fsync, os.replace, os.open
    names: dict[int, str] = {}

    def open_(path: Any, flags: int, *a: Any) -> int:
        fd = real_open(path, flags, *a)
        names[fd] = Path(path).name
        if flags & os.O_CREAT:
            events.append(("create", Path(path).name))
        return fd

    def fsync(fd: int) -> None:
        events.append(("fsync", names.get(fd, "?")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("rename", f"{Path(src).name}>{Path(dst).name}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_media(media, {"bundle-c.kit": b"charlie"})
    monkeypatch.undo()
    tmp = f".bundle-c.kit.tmp-{os.getpid()}"
    assert events[:4] == [
        ("create", tmp),
        ("fsync", tmp),
        ("rename", f"{tmp}>bundle-c.kit"),
        ("fsync", media.name),
    ]
    assert events[-2:] == [
        ("rename", f".{manifest.NAME}.tmp-{os.getpid()}>SHA256SUMS"),
        ("fsync", media.name),
    ]
    assert read_media(media) == {**FILES, "bundle-c.kit": b"charlie"}
    assert not [p for p in media.iterdir() if p.name.startswith(".")]


def test_write_that_reads_back_differently_is_refused(
    media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stick that acknowledges writes it does not keep is caught at once."""
    import kit.fsutil

    real = kit.fsutil.read_regular
    monkeypatch.setattr(
        kit.fsutil, "read_regular", lambda p, cap, what: real(p, cap, what)[:-1] + b"?"
    )
    with pytest.raises(MediaError, match="read-back differs"):
        write_media(media, {"bundle-c.kit": b"charlie"})


@given(st.text(min_size=1, max_size=120))
def test_written_names_are_unique_case_insensitively(name: str) -> None:
    """Names come from a fixed lowercase alphabet, so no two accepted names can
    collide on case-insensitive media (FAT, exFAT)."""
    if manifest.FILE_RE.fullmatch(name):
        assert name == name.lower() and name.isascii()
        assert "/" not in name and not name.startswith(".")


def test_a_fresh_export_does_not_undo_approvals_staged(
    world: World, tmp_path: Path
) -> None:
    """An approver signs the copy on the stick; the signer's next export
    carries the copy without that approval. The host keeps the approved one,
    and still takes a copy with more approvals over one with fewer."""
    from kit import encoding
    from kit.formats.envelope import parse_envelope

    key = world.add_approver()
    issued = world.issue()
    env = parse_envelope(issued.data, label="kit/bundle/v1", cap=1 << 16, what="b")
    sigs = [[kid, sig] for kid, sig in env.signatures]
    sigs.append([key.key_id, key.sign(env.label, env.body)])
    approved = encoding.encode([env.label, env.body, sigs])
    name = f"bundle-{issued.claims.bundle_id}.kit"
    staged = world.host_home("build-01") / "inbox" / f"{issued.claims.bundle_id}.kit"

    def carry(folder: Path, data: bytes) -> list[str]:
        write_media(folder, {**world.signer.root_history(), name: data})
        host = world.host()
        try:
            return host.import_media(folder, now=T0).skipped
        finally:
            host.close()

    assert carry(tmp_path / "plain", issued.data) == []
    assert carry(tmp_path / "approved", approved) == []
    assert staged.read_bytes() == approved  # more approvals replace fewer
    skipped = carry(tmp_path / "re-export", issued.data)
    assert skipped == [
        f"{name} (the staged copy has 1 approval(s) this one lacks; kept it)"
    ]
    assert staged.read_bytes() == approved


# -- writing only media that reads back (write_media refuses strays) ----------


def _system_folder(m: Path) -> None:
    (m / "System Volume Information").mkdir()  # Windows, on every FAT stick


def _trash(m: Path) -> None:
    (m / ".Trash-1000").mkdir()  # a Linux desktop's deleted files


def _leftover_request(m: Path) -> None:
    (m / "enroll.kit").write_bytes(b"an enrollment request left behind")


def _notes(m: Path) -> None:
    (m / "notes.txt").write_bytes(b"remember the milk")


def _temp_of_a_crashed_write(m: Path) -> None:
    (m / ".bundle-c.kit.tmp-99999").write_bytes(b"half")


STRAYS: dict[str, tuple[Callable[[Path], None], str]] = {
    "system-volume-information": (
        _system_folder,
        "System Volume Information (not a regular file)",
    ),
    "trash": (_trash, ".Trash-1000 (not a regular file)"),
    "leftover-request": (_leftover_request, "enroll.kit (not listed in SHA256SUMS)"),
    "notes": (_notes, "notes.txt (not listed in SHA256SUMS)"),
    "crashed-write": (_temp_of_a_crashed_write, ".bundle-c.kit.tmp-99999 (not"),
    "symlink": (_symlink_unlisted, "passwd.kit (is a symbolic link)"),
    "fifo": (_fifo, "pipe.kit (not a regular file)"),
    "missing-listed-file": (_missing_listed, "bundle-b.kit: no such file"),
    "digest-mismatch": (_digest_mismatch, "bundle-a.kit: does not match its digest"),
}


@pytest.mark.parametrize("name", sorted(STRAYS))
def test_write_refuses_a_folder_the_reader_would_refuse(media: Path, name: str) -> None:
    """Before a byte is written, not after kit import refuses the stick."""
    tamper, why = STRAYS[name]
    tamper(media)
    with pytest.raises(MediaError):
        read_media(media)  # the reader's verdict, which the writer anticipates
    before = _snapshot(media)
    with pytest.raises(MediaError) as err:
        write_media(media, {"bundle-c.kit": b"charlie"})
    message = str(err.value)
    assert why in message and "nothing written" in message
    if name not in ("missing-listed-file", "digest-mismatch"):
        assert message.startswith(f"{media}: holds 1 entry kit would refuse")
        assert f"empty subfolder instead (e.g. {media / 'kit'})" in message
    assert _snapshot(media) == before  # nothing added, nothing replaced


def test_write_names_every_stray(tmp_path: Path) -> None:
    folder = tmp_path / "stick"
    folder.mkdir()
    for n in range(7):
        (folder / f"photo-{n}.jpg").write_bytes(b"")
    (folder / "System Volume Information").mkdir()
    with pytest.raises(MediaError) as err:
        write_media(folder, {"bundle-a.kit": b"a"})
    assert "holds 8 entries" in str(err.value)
    assert "System Volume Information (not a regular file)" in str(err.value)
    assert "and 3 more" in str(err.value)
    assert sorted(p.name for p in folder.iterdir())[0] == "System Volume Information"
    assert not (folder / "bundle-a.kit").exists()
    assert not (folder / manifest.NAME).exists()
    # The suggested subfolder works, and reads back.
    write_media(folder / "kit", {"bundle-a.kit": b"a"})
    assert read_media(folder / "kit") == {"bundle-a.kit": b"a"}


def test_rewriting_kit_s_own_files_still_works(media: Path) -> None:
    """kit export to the same stick again replaces its files by name; a
    receipt batch or ledger export adds to what is there; an unlisted file
    under a name written now (a write cut short before the manifest) is
    replaced and listed."""
    write_media(media, {"bundle-a.kit": b"alpha, newer"})
    assert read_media(media) == FILES | {"bundle-a.kit": b"alpha, newer"}
    (media / "bundle-c.kit").write_bytes(b"cut short")
    write_media(media, {"bundle-c.kit": b"charlie"})
    assert read_media(media)["bundle-c.kit"] == b"charlie"


def test_cli_export_refuses_a_stick_with_strays_then_exports_twice(
    world: World, tmp_path: Path
) -> None:
    usb = tmp_path / "uf3"
    (usb / "System Volume Information").mkdir(parents=True)
    proc = world.kit("export", "--home", world.signer_home, "--to", usb)
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    assert "System Volume Information (not a regular file)" in err
    assert f"empty subfolder instead (e.g. {usb / 'kit'})" in err
    assert sorted(p.name for p in usb.iterdir()) == ["System Volume Information"]

    sub = usb / "kit"
    for _ in range(2):  # the same stick twice: kit's own files are replaced
        proc = world.kit("export", "--home", world.signer_home, "--to", sub)
        assert proc.returncode == 0, proc.stderr
    home = world.host_home("build-01")
    proc = world.kit("import", sub, "--home", home)
    assert proc.returncode == 0, proc.stderr


def test_cli_receipts_export_refuses_a_folder_with_notes(
    world: World, tmp_path: Path
) -> None:
    home = world.host_home("build-01")
    host = world.host()
    try:
        # one release receipt to export
        host.authorize(
            world.issue().data, task=TASK, command=child_argv(tmp_path / "a"), now=T0
        )
    finally:
        host.close()
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_bytes(b"batch for Monday")
    proc = world.kit("receipts", "export", "--home", home, "--to", out)
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    assert "notes.txt (not listed in SHA256SUMS)" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # Nothing counted as exported: the same receipts go out on the next try,
    # and a second batch is appended next to the first.
    clean = tmp_path / "clean"
    proc = world.kit("receipts", "export", "--home", home, "--to", clean)
    assert proc.returncode == 0, proc.stderr
    [first] = [p.name for p in clean.glob("receipts-*.kit")]
    assert first.endswith("-0000000001-0000000001.kit")
    host = world.host()
    try:
        host.authorize(
            world.issue().data, task=TASK, command=child_argv(tmp_path / "b"), now=T0
        )
    finally:
        host.close()
    proc = world.kit("receipts", "export", "--home", home, "--to", clean)
    assert proc.returncode == 0, proc.stderr
    assert len(read_media(clean)) == 2


def test_a_write_that_fails_half_way_leaves_no_unlisted_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stick that fills up before the manifest is written keeps what it
    held before (listed), not new files its manifest lacks, so the next
    write and read are not refused."""
    import kit.media as media_mod
    from kit.errors import MediaError

    folder = tmp_path / "usb"
    write_media(folder, {"bundle-a.kit": b"a"})
    real = media_mod.atomic_write

    def full_at_manifest(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.name == "SHA256SUMS":
            raise MediaError(f"cannot write {path}: no space left on device")
        real(path, data, mode)

    monkeypatch.setattr(media_mod, "atomic_write", full_at_manifest)
    with pytest.raises(MediaError, match="no space left"):
        write_media(folder, {"bundle-b.kit": b"b", "bundle-c.kit": b"c"})
    # A listed file replaced (a re-signed list, a bundle approved in place)
    # is put back as it was.
    with pytest.raises(MediaError, match="no space left"):
        write_media(folder, {"bundle-a.kit": b"a, approved", "bundle-d.kit": b"d"})
    monkeypatch.setattr(media_mod, "atomic_write", real)
    assert sorted(p.name for p in folder.iterdir()) == ["SHA256SUMS", "bundle-a.kit"]
    assert read_media(folder) == {"bundle-a.kit": b"a"}
    write_media(folder, {"bundle-b.kit": b"b"})
    assert read_media(folder) == {"bundle-a.kit": b"a", "bundle-b.kit": b"b"}


def test_an_import_whose_inbox_fills_up_stages_nothing(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write failing after some bundles were staged removes them again:
    'nothing imported' holds, and the denial receipt says so."""
    import kit.host.host as host_mod
    from kit.errors import MediaError

    folder = tmp_path / "usb"
    _import_media(world, folder, {})
    real = host_mod.atomic_write
    writes: list[Path] = []

    def full_at_second(path: Path, data: bytes, mode: int = 0o644) -> None:
        writes.append(path)
        if len(writes) == 2:
            raise MediaError(f"cannot write {path}: no space left on device")
        real(path, data, mode)

    monkeypatch.setattr(host_mod, "atomic_write", full_at_second)
    host = world.host()
    try:
        with pytest.raises(MediaError, match=r"no space left.*nothing imported"):
            host.import_media(folder, now=T0)
    finally:
        host.close()
    assert len(writes) == 2 and writes[0].parent.name == "inbox"
    assert _inbox(world) == []
    (denial,) = world.receipts()
    assert (denial.action, denial.event) == ("import", "deny")


def test_a_name_with_a_newline_prints_no_line_of_its_own(
    world: World, tmp_path: Path
) -> None:
    """A file name from a stick is shown escaped, newline included, so it
    cannot print a line that reads like one of kit's."""
    folder = tmp_path / "usb"
    _import_media(world, folder, {})
    forged = "x\nkit: staged 0123456789abcdef0123456789abcdef: task t\n.kit"
    (folder / forged).write_bytes(b"")
    proc = world.kit("import", folder, "--home", world.host_home("build-01"))
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    assert not any(line.startswith("kit: staged") for line in err.splitlines()), err
    assert "x\\x0akit: staged 0123456789abcdef0123456789abcdef: task t\\x0a.kit" in err


def test_import_says_how_many_uses_are_left(world: World, tmp_path: Path) -> None:
    """Staged again after its use, a bundle is shown as spent, not as new."""
    issued = world.issue(max_uses=1)
    folder = tmp_path / "usb"
    write_media(folder, {f"bundle-{issued.claims.bundle_id}.kit": issued.data})
    home = world.host_home("build-01")
    first = world.kit("import", folder, "--home", home, "--json")
    assert first.returncode == 0, first.stderr
    assert b"1 of 1 use(s) left, expires" in first.stderr
    assert json.loads(first.stdout)[0]["uses_left"] == 1
    host = world.host()
    try:
        out = child_argv(tmp_path / "o")
        release = host.authorize(issued.data, task=TASK, command=out, now=T0)
        host.record_exit(release, status=0, duration_ms=1, now=T0 + 1)
    finally:
        host.close()
    again = world.kit("import", folder, "--home", home)
    assert again.returncode == 0, again.stderr
    assert b"0 of 1 use(s) left (spent), expires" in again.stderr
