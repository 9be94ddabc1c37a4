"""Media folders: only manifest-listed regular files with matching digests are
read; writes use safe names only; import stages everything or nothing."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import World

from kit.errors import MediaError
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
    "bad",
    [
        "untrusted-signer",
        "truncated-bundle",
        "flipped-byte",
        "foreign-trust-root",
        "not-a-kit-file",
    ],
)
def test_import_is_all_or_nothing(world: World, tmp_path: Path, bad: str) -> None:
    folder = tmp_path / "usb"
    _import_media(world, folder, _bad_files(world)[bad])
    host = world.host()
    try:
        with pytest.raises(MediaError, match=r"refused|nothing imported"):
            host.import_media(folder)
    finally:
        host.close()
    assert _inbox(world) == []


def test_import_stages_every_bundle(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "usb"
    ids = _import_media(world, folder, {})
    host = world.host()
    try:
        staged = host.import_media(folder).staged
    finally:
        host.close()
    assert sorted(v.claims.bundle_id for v in staged) == ids
    assert _inbox(world) == [f"{b}.kit" for b in ids]


def test_cli_import_is_all_or_nothing(world: World, tmp_path: Path) -> None:
    home = world.host_home("build-01")
    bad = tmp_path / "bad"
    _import_media(world, bad, _bad_files(world)["untrusted-signer"])
    proc = world.kit("import", bad, "--home", home)
    assert proc.returncode == 4, proc.stderr
    assert b"nothing imported" in proc.stderr
    assert _inbox(world) == []

    tampered = tmp_path / "tampered"
    _import_media(world, tampered, {})
    victim = next(tampered.glob("bundle-*.kit"))
    data = victim.read_bytes()
    victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    proc = world.kit("import", tampered, "--home", home)
    assert proc.returncode == 4, proc.stderr
    assert b"does not match the manifest" in proc.stderr
    assert _inbox(world) == []

    good = tmp_path / "good"
    ids = _import_media(world, good, {})
    proc = world.kit("import", good, "--home", home, "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(b["bundle_id"] for b in json.loads(proc.stdout)) == ids
    assert _inbox(world) == [f"{b}.kit" for b in ids]
