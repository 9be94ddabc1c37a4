"""QR transport (issue 8): every object through real PNG/JPEG images and a
printed PDF sheet, decoded by zxing-cpp as users run it; frames shuffled,
duplicated, mixed with another message, contradictory or degraded as a
phone camera would see them; ``kit import`` from a folder of QR images."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DAY, T0, TASK, World, child_argv
from PIL import Image, ImageFilter

from kit import encoding, qr
from kit.crypto.sign import SigningKey
from kit.errors import FormatError, MediaError
from kit.formats.pubkey import make_public_key_file


def _batch(world: World, folder: Path, uses: int) -> bytes:
    """A real receipt batch of ``2 * uses`` receipts (release + exit each)."""
    host = world.host()
    try:
        for n in range(uses):
            issued = world.issue()
            release = host.authorize(
                issued.data,
                task=TASK,
                command=child_argv(folder / f"out-{n}"),
                now=T0,
            )
            host.record_exit(release, status=0, duration_ms=1, now=T0 + 1)
        path, _, _ = host.export_receipts(folder, T0 + 2) or (None, 0, 0)
    finally:
        host.close()
    assert path is not None
    return path.read_bytes()


def _objects(world: World, tmp: Path) -> dict[str, bytes]:
    """One of every kind that crosses the gap."""
    return {
        "bundle": world.issue().data,
        "trust root": world.root_bytes,
        "revocation list": world.signer.revocation_list(T0, DAY),
        "enrollment request": (
            world.host_home("build-01") / "enrollment.kit"
        ).read_bytes(),
        "public key": make_public_key_file(SigningKey.generate(), "alice", T0),
        "receipt batch": _batch(world, tmp / "receipts", 12),
    }


def _pngs(obj: bytes, folder: Path, ec: str = "M") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = qr.encode_frames(obj)
    paths = []
    for i, text in enumerate(frames, 1):
        path = folder / f"{qr.message_id(obj)[:6].lower()}-{i}.png"
        qr.frame_image(text, ec).save(path)
        paths.append(path)
    return paths


def _decode(paths: list[Path]) -> qr.Collector:
    return qr.collect_images(paths).collector


def _kit(world: World, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return world.kit(*args)


# -- round trips through real images ------------------------------------------


def test_every_object_type_round_trips_through_png(
    world: World, tmp_path: Path
) -> None:
    for kind, obj in _objects(world, tmp_path).items():
        paths = _pngs(obj, tmp_path / kind.replace(" ", "-"))
        collector = _decode(paths)
        assert list(collector.results().values()) == [obj], kind
        assert qr.describe(obj).kind == kind
        if kind == "receipt batch":
            assert len(paths) > 1, "the batch should need several frames"


def test_frame_counts_documented_in_docs(world: World, tmp_path: Path) -> None:
    """docs/qr.md: a typical bundle is one frame, a 100-receipt batch about
    20 at the default frame size."""
    assert len(qr.encode_frames(world.issue().data)) == 1
    batch = _batch(world, tmp_path / "r", 50)
    n = len(qr.encode_frames(batch))
    assert 15 <= n <= 25, n
    assert len(qr.encode_frames(batch, 300)) > n


def test_frame_header_layout(world: World) -> None:
    obj = world.issue().data
    [text] = qr.encode_frames(obj)
    assert set(text) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
    head, mid, index, total, payload = text.split(":")
    assert (head, index, total) == ("KQ1", "0001", "0001")
    assert mid == qr.message_id(obj) and len(mid) == 26
    packed = base64.b32decode(payload + "=" * (-len(payload) % 8))
    assert zlib.decompress(packed, -15) == obj


def test_captions_name_kind_id_position_digest_and_expiry(world: World) -> None:
    issued = world.issue()
    d = qr.describe(issued.data)
    text = qr.caption(d, 1, 1, issued.data)
    assert text.startswith(f"bundle {issued.claims.bundle_id} - frame 1 of 1 - ")
    assert f"sha256 {hashlib.sha256(issued.data).hexdigest()[:12]}" in text
    assert "expires " in text
    assert qr.describe(b"\x93not kit").kind == "unknown object"


# -- the receiver: order, duplicates, other messages, contradictions ----------


def test_cli_decodes_shuffled_duplicated_frames_with_a_foreign_one(
    world: World, tmp_path: Path
) -> None:
    batch = _batch(world, tmp_path / "r", 12)
    images = tmp_path / "images"
    proc = _kit(
        world,
        "qr",
        "encode",
        tmp_path / "r" / _only(tmp_path / "r"),
        "--out",
        images,
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["kind"] == "receipt batch" and info["frames"] > 1
    paths = sorted(images.iterdir())
    for p in paths[:2]:  # duplicates, under other names
        shutil.copy(p, images / f"dup-{p.name}")
    # one frame of another message (the trust root in 100-byte frames)
    foreign = qr.encode_frames(world.root_bytes, 100)
    assert len(foreign) > 1
    qr.frame_image(foreign[1]).save(images / "foreign.png")
    shuffled = list(images.iterdir())
    random.Random(8).shuffle(shuffled)
    out = tmp_path / "batch.kit"
    proc = _kit(world, "qr", "decode", *shuffled, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == batch
    err = proc.stderr.decode()
    assert "2 duplicates" in err
    assert "set aside the frames of message" in err
    assert json.loads(proc.stdout)["set_aside"] != []


def _only(folder: Path) -> str:
    [name] = [p.name for p in folder.iterdir() if p.name.startswith("receipts-")]
    return name


def test_missing_frame_is_named_and_nothing_written(
    world: World, tmp_path: Path
) -> None:
    batch = _batch(world, tmp_path / "r", 12)
    paths = _pngs(batch, tmp_path / "img")
    out = tmp_path / "out.kit"
    proc = _kit(world, "qr", "decode", *paths[:1], *paths[2:], "--out", out)
    assert proc.returncode == 3, proc.stderr
    assert f"{len(paths) - 1} of {len(paths)} frames read; missing 2" in (
        proc.stderr.decode()
    )
    assert not out.exists()


def _frame(mid: str, i: int, n: int, payload: bytes = b"abcde") -> str:
    return f"KQ1:{mid}:{i:04d}:{n:04d}:{qr._b32(payload)}"


MID = qr.message_id(b"x")


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (
            [_frame(MID, 1, 3), _frame(MID, 2, 4)],
            "disagree on the frame count (3 vs 4)",
        ),
        (
            [_frame(MID, 2, 3, b"aaaaa"), _frame(MID, 2, 3, b"bbbbb")],
            "two different frames 2 of 3",
        ),
        ([_frame(MID, 1, 9999)], "claims 9999 frames; 1 to 1000 are allowed"),
        ([_frame(MID, 0, 3)], "index 0 is outside 1 to 3"),
        ([_frame(MID, 4, 3)], "index 4 is outside 1 to 3"),
        (["KQ2:" + _frame(MID, 1, 1)[4:]], "version KQ2 is not supported"),
        (["HTTPS://EXAMPLE.ORG/"], "not a kit frame"),
        ([_frame(MID, 1, 1)[:-1] + "1"], "header is malformed"),
        ([f"KQ1:{MID}:0001:0001:AB"], "not canonical unpadded base32"),
        ([f"KQ1:{MID}:0001:0001:ABC"], "not canonical unpadded base32"),
        ([_frame(MID, 1, 1, bytes(1001))], "is over the 1641 cap"),
    ],
)
def test_inconsistent_or_malformed_frames_are_refused(
    frames: list[str], message: str
) -> None:
    collector = qr.Collector()
    with pytest.raises(FormatError) as err:
        for text in frames:
            collector.add(text)
    assert message in str(err.value)


def _raw_frames(packed: bytes, mid: str) -> list[str]:
    chunks = [packed[i : i + 700] for i in range(0, len(packed), 700)]
    return [_frame(mid, i, len(chunks), c) for i, c in enumerate(chunks, 1)]


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        # valid frames of one object under another object's id
        (lambda: _raw_frames(_deflate(b"other"), MID), "does not match the message id"),
        # a DEFLATE bomb: 2 MiB of zeros in a few frames
        (lambda: _raw_frames(_deflate(bytes(2 << 20)), MID), "inflates to over"),
        (lambda: _raw_frames(_deflate(b"x") + b"tail", MID), "followed by extra"),
        (lambda: _raw_frames(_deflate(b"x" * 999)[:-2], MID), "truncated"),
        (lambda: _raw_frames(b"\xff\xff\xff\xff\xff", MID), "not a DEFLATE stream"),
    ],
)
def test_reassembled_object_is_checked(
    build: Callable[[], list[str]], message: str
) -> None:
    collector = qr.Collector()
    for text in build():
        collector.add(text)
    with pytest.raises(FormatError) as err:
        collector.results()
    assert message in str(err.value)


def test_contradictory_frames_through_images_exit_3(
    world: World, tmp_path: Path
) -> None:
    obj = world.issue().data
    mid = qr.message_id(obj)
    folder = tmp_path / "img"
    folder.mkdir()
    qr.frame_image(_frame(mid, 1, 2)).save(folder / "a.png")
    qr.frame_image(_frame(mid, 2, 3)).save(folder / "b.png")
    proc = _kit(world, "qr", "decode", folder, "--out", tmp_path / "o.kit")
    assert proc.returncode == 3, proc.stderr
    assert "disagree on the frame count (2 vs 3)" in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()


def test_not_an_image_and_empty_folder(world: World, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    proc = _kit(world, "qr", "decode", bad, "--out", tmp_path / "o")
    assert proc.returncode == 3
    assert "bad.png: not a PNG or JPEG image" in proc.stderr.decode()
    (tmp_path / "empty").mkdir()
    proc = _kit(world, "qr", "decode", tmp_path / "empty", "--out", tmp_path / "o")
    assert proc.returncode == 4
    assert "no PNG or JPEG image" in proc.stderr.decode()
    blank = tmp_path / "blank.png"
    Image.new("L", (200, 200), 255).save(blank)
    proc = _kit(world, "qr", "decode", blank, "--out", tmp_path / "o")
    assert proc.returncode == 3
    assert "no QR code found in" in proc.stderr.decode()
    assert "no kit QR frame was found" in proc.stderr.decode()


def test_two_complete_messages_need_a_choice(world: World, tmp_path: Path) -> None:
    a, b = world.issue().data, world.root_bytes
    paths = _pngs(a, tmp_path / "i") + _pngs(b, tmp_path / "i")
    out = tmp_path / "o.kit"
    proc = _kit(world, "qr", "decode", *paths, "--out", out)
    assert proc.returncode == 2 and "choose one with --message" in proc.stderr.decode()
    proc = _kit(
        world, "qr", "decode", *paths, "--out", out, "--message", qr.message_id(b)[:6]
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == b


def test_decoded_receipts_reconcile_from_a_media_folder(
    world: World, tmp_path: Path
) -> None:
    batch = _batch(world, tmp_path / "r", 12)
    paths = _pngs(batch, tmp_path / "img")
    media = tmp_path / "batches"
    proc = _kit(world, "qr", "decode", *paths, "--media", media)
    assert proc.returncode == 0, proc.stderr
    [name] = [p.name for p in media.iterdir() if p.name != "SHA256SUMS"]
    assert name == f"receipts-{qr.message_id(batch).lower()}.kit"
    proc = _kit(world, "reconcile", media, "--home", world.signer_home)
    assert proc.returncode == 0, proc.stderr
    proc = _kit(world, "qr", "decode", *paths, "--media", media, "--out", "x")
    assert proc.returncode == 2 and "exclude each other" in proc.stderr.decode()


# -- what a phone sees ---------------------------------------------------------


def _phone(img: Image.Image, seed: int, path: Path) -> Path:
    """Scaled down, turned a few degrees, blurred, noisy, JPEG quality 60."""
    rng = random.Random(seed)
    img = img.convert("L")
    img = img.resize((int(img.width * 0.7), int(img.height * 0.7)), Image.BILINEAR)
    img = img.rotate(
        rng.uniform(3, 5) * rng.choice((-1, 1)),
        Image.BICUBIC,
        expand=True,
        fillcolor=255,
    )
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    noise = Image.effect_noise(img.size, 40)
    img = Image.blend(img, noise, 0.15)
    img.save(path, format="JPEG", quality=60)
    return path


def test_degraded_camera_images_decode(world: World, tmp_path: Path) -> None:
    batch = _batch(world, tmp_path / "r", 12)
    for n, obj in enumerate((world.issue().data, batch)):
        paths = []
        for i, text in enumerate(qr.encode_frames(obj)):
            paths.append(
                _phone(qr.frame_image(text), 10 * n + i, tmp_path / f"p{n}-{i}.jpg")
            )
        assert list(_decode(paths).results().values()) == [obj]


# -- the printed sheet ---------------------------------------------------------


def test_pdf_sheet_rendered_by_pdftoppm_decodes(world: World, tmp_path: Path) -> None:
    assert shutil.which("pdftoppm"), "scripts/sysdeps.sh installs poppler-utils"
    batch = _batch(world, tmp_path / "r", 20)
    src = tmp_path / "r" / _only(tmp_path / "r")
    sheet = tmp_path / "sheet.pdf"
    proc = _kit(world, "qr", "encode", src, "--pdf", sheet, "--ec", "Q")
    assert proc.returncode == 0, proc.stderr
    assert sheet.read_bytes().startswith(b"%PDF")
    pages = tmp_path / "pages"
    pages.mkdir()
    subprocess.run(
        ["pdftoppm", "-r", "100", "-png", str(sheet), str(pages / "page")],
        check=True,
        timeout=60,
    )
    assert len(list(pages.iterdir())) >= 2, "several frames fill several pages"
    out = tmp_path / "back.kit"
    proc = _kit(world, "qr", "decode", pages, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == batch


def test_terminal_frames(world: World, tmp_path: Path) -> None:
    src = tmp_path / "b.kit"
    issued = world.issue()
    src.write_bytes(issued.data)
    proc = _kit(world, "qr", "encode", src, "--terminal")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "\u2580" in out or "\u2584" in out or "\u2588" in out
    assert f"bundle {issued.claims.bundle_id} - frame 1 of 1" in out


def test_encode_needs_a_destination_and_caps_size(world: World, tmp_path: Path) -> None:
    src = tmp_path / "b.kit"
    src.write_bytes(world.issue().data)
    proc = _kit(world, "qr", "encode", src)
    assert proc.returncode == 2 and "--out DIR, --pdf FILE" in proc.stderr.decode()
    big = tmp_path / "big"
    big.write_bytes(bytes(qr.MAX_OBJECT + 1))
    proc = _kit(world, "qr", "encode", big, "--out", tmp_path / "o")
    assert proc.returncode == 3 and "over" in proc.stderr.decode()
    proc = _kit(world, "qr", "encode", src, "--out", tmp_path / "o", "--ec", "X")
    assert proc.returncode == 2


# -- kit import from a folder of QR images -------------------------------------


def _qr_media(world: World, folder: Path, objects: list[bytes]) -> Path:
    for n, obj in enumerate(objects):
        src = folder.parent / f"src-{n}.kit"
        src.write_bytes(obj)
        proc = _kit(world, "qr", "encode", src, "--out", folder)
        assert proc.returncode == 0, proc.stderr
    return folder


def test_import_from_qr_images_then_run(world: World, tmp_path: Path) -> None:
    issued = world.issue()
    other = world.issue("build-02")
    rl = world.signer.revocation_list(T0, DAY)
    folder = _qr_media(
        world, tmp_path / "scans", [issued.data, other.data, world.root_bytes, rl]
    )
    home = world.host_home("build-01")
    proc = _kit(world, "import", folder, "--home", home)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert f"staged {issued.claims.bundle_id}" in err
    assert "(for host build-02)" in err
    assert "revocation list v" in err
    out = tmp_path / "secret-out"
    proc = _kit(
        world,
        "run",
        issued.claims.bundle_id,
        "--task",
        TASK,
        "--home",
        home,
        "--",
        *child_argv(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == issued.secret


def test_import_of_tampered_object_in_valid_frames_is_refused(
    world: World, tmp_path: Path
) -> None:
    issued = world.issue()
    tampered = bytearray(issued.data)
    tampered[-10] ^= 0x01  # inside the signature
    folder = _qr_media(world, tmp_path / "scans", [bytes(tampered), world.root_bytes])
    home = world.host_home("build-01")
    before = sorted((home / "inbox").iterdir())
    proc = _kit(world, "import", folder, "--home", home)
    assert proc.returncode == 1, proc.stderr  # as kit verify: unauthenticated
    err = proc.stderr.decode()
    assert "not validly signed" in err and "nothing imported" in err
    assert sorted((home / "inbox").iterdir()) == before
    denial = world.receipts()[-1]
    assert (denial.action, denial.reason) == ("import", "unauthenticated")


def test_import_refuses_incomplete_and_foreign_kinds(
    world: World, tmp_path: Path
) -> None:
    home = world.host_home("build-01")
    batch = _batch(world, tmp_path / "r", 12)
    scans = tmp_path / "scans"
    paths = _pngs(batch, scans)
    paths[1].unlink()
    proc = _kit(world, "import", scans, "--home", home)
    assert proc.returncode == 3  # FORMAT.md 13.2, as kit qr decode
    assert "missing 2" in proc.stderr.decode()
    assert "nothing imported" in proc.stderr.decode()
    denial = world.receipts()[-1]
    assert (denial.action, denial.reason) == ("import", "malformed")
    enroll = (home / "enrollment.kit").read_bytes()
    folder = _qr_media(world, tmp_path / "s2", [enroll, world.issue().data])
    proc = _kit(world, "import", folder, "--home", home)
    assert proc.returncode == 4
    assert "enrollment request: not something a host imports" in (proc.stderr.decode())
    assert list((home / "inbox").iterdir()) == []


def test_import_library_reads_qr_folder_and_skips_blank_images(
    world: World, tmp_path: Path
) -> None:
    issued = world.issue()
    scans = tmp_path / "scans"
    _pngs(issued.data, scans)
    Image.new("L", (100, 100), 255).save(scans / "blank.png")
    host = world.host()
    try:
        result = host.import_media(scans, now=T0)
    finally:
        host.close()
    assert [v.claims.bundle_id for v in result.staged] == [issued.claims.bundle_id]
    assert "blank.png (no QR code found)" in result.skipped
    assert not qr.is_image_folder(tmp_path / "nope")
    with pytest.raises(MediaError):
        host = world.host()
        try:
            host.import_media(tmp_path / "nope", now=T0)
        finally:
            host.close()


def test_host_hot_path_loads_no_image_library() -> None:
    code = (
        "import sys, kit.cli.main, kit.host.host, kit.host.verifier\n"
        "print([m for m in ('PIL', 'qrcode', 'zxingcpp') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, timeout=60
    )
    assert out.stdout.strip() == b"[]"


def test_library_bounds() -> None:
    r = qr.Reassembler(MID, 2)
    with pytest.raises(FormatError, match="is not part of message"):
        r.add(qr.parse_frame(_frame(qr.message_id(b"y"), 1, 2)))
    collector = qr.Collector()
    for n in range(qr.MAX_MESSAGES):
        collector.add(_frame(qr.message_id(str(n).encode()), 1, 2))
    with pytest.raises(FormatError, match="more than 64 messages"):
        collector.add(_frame(MID, 1, 2))
    with pytest.raises(FormatError, match="frame size 99 is outside 100 to 1000"):
        qr.encode_frames(b"x", 99)
    noise = random.Random(1).randbytes(150_000)  # incompressible
    with pytest.raises(FormatError, match="frames, over the 1000-frame cap"):
        qr.encode_frames(noise, 100)


# -- what kit qr encode takes, and what it never overwrites --------------------


def test_encode_refuses_keys_and_secrets_unless_any_bytes(
    world: World, tmp_path: Path
) -> None:
    """Anyone who sees a QR code can read it: a key or a secret file is not
    turned into pictures by a slip of the keyboard."""
    token = tmp_path / "token.txt"
    token.write_bytes(b"ghp_the-deploy-token\n")
    ledger = tmp_path / "ledger.kit"  # an enveloped kit object that stays home
    ledger.write_bytes(encoding.encode(["kit/ledger-export/v1", b"body", []]))
    frames, sheet = tmp_path / "frames", tmp_path / "sheet.pdf"
    cases = [
        (world.signer_home / "signer.key", "not a kit object that crosses the gap"),
        (
            world.host_home("build-01") / "hpke.key",
            "not a kit object that crosses the gap",
        ),
        (token, "not a kit object that crosses the gap"),
        (ledger, "a kit/ledger-export/v1 object, which does not cross the gap"),
    ]
    for src, why in cases:
        assert src.exists(), src
        proc = _kit(world, "qr", "encode", src, "--out", frames, "--pdf", sheet)
        err = proc.stderr.decode()
        assert proc.returncode == 3, err
        assert f"{src}: {why}; refused" in err and "--any-bytes" in err
        assert not frames.exists() and not sheet.exists()  # nothing written
    proc = _kit(world, "qr", "encode", token, "--out", frames, "--any-bytes")
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "warning:" in err and "anyone who sees the codes can read it" in err
    out = tmp_path / "back.txt"
    proc = _kit(world, "qr", "decode", frames, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == token.read_bytes()
    # A kit object that crosses needs no flag and draws no warning.
    src = tmp_path / "b.kit"
    src.write_bytes(world.issue().data)
    proc = _kit(world, "qr", "encode", src, "--out", tmp_path / "f2", "--any-bytes")
    assert proc.returncode == 0 and b"warning" not in proc.stderr


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_encode_and_decode_never_overwrite_without_force(
    world: World, tmp_path: Path
) -> None:
    src = tmp_path / "b.kit"
    src.write_bytes(world.issue().data)
    # The tester's slip: --pdf naming the signer key instead of a new file.
    key = tmp_path / "S" / "signer.key"
    key.parent.mkdir()
    key.write_bytes((world.signer_home / "signer.key").read_bytes())
    kept = key.read_bytes()
    frames = tmp_path / "frames"
    proc = _kit(world, "qr", "encode", src, "--out", frames, "--pdf", key)
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    assert f"{key} already exists; nothing written" in err and "--force" in err
    assert key.read_bytes() == kept and not frames.exists()

    # The same object again into the same folder: identical frames, no error
    # (kit export writes the trust root twice, under two names).
    assert _kit(world, "qr", "encode", src, "--out", frames).returncode == 0
    before = _files(frames)
    assert _kit(world, "qr", "encode", src, "--out", frames).returncode == 0
    assert _files(frames) == before
    # Other pictures under the same names (here EC H) are refused, then forced.
    proc = _kit(world, "qr", "encode", src, "--out", frames, "--ec", "H")
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    [name] = before
    assert f"{frames / name} already exists; nothing written" in err
    assert _files(frames) == before
    proc = _kit(world, "qr", "encode", src, "--out", frames, "--ec", "H", "--force")
    assert proc.returncode == 0, proc.stderr
    assert _files(frames) != before
    sheet = tmp_path / "sheet.pdf"
    sheet.write_bytes(b"last week's sheet")
    proc = _kit(world, "qr", "encode", src, "--pdf", sheet, "--force")
    assert proc.returncode == 0 and sheet.read_bytes().startswith(b"%PDF")

    # kit qr decode --out: checked before any image is read.
    proc = _kit(world, "qr", "decode", frames, "--out", key)
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    assert f"{key} already exists; nothing read or written" in err
    assert key.read_bytes() == kept
    other = tmp_path / "old.kit"
    other.write_bytes(b"old")
    proc = _kit(world, "qr", "decode", frames, "--out", other, "--force")
    assert proc.returncode == 0, proc.stderr
    assert other.read_bytes() == src.read_bytes()


# -- images that cannot be read: the whole read is refused, naming why --------


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body)
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with a few
    bytes of pixel data: cheap to make, enormous if ever decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(bytes(64)))
        + _chunk(b"IEND", b"")
    )


def _jpeg_claiming(width: int, height: int, tmp: Path) -> bytes:
    """A real small JPEG with its frame header (SOF0) rewritten."""
    Image.new("L", (16, 16), 255).save(tmp / "small.jpg", format="JPEG")
    data = bytearray((tmp / "small.jpg").read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_oversized_and_unreadable_images_are_named_with_their_cause(
    world: World, tmp_path: Path
) -> None:
    """FORMAT.md 13.2: a 30000x30000 PNG is refused by its header, before a
    pixel is decoded, naming the pixel cap (Pillow's own bomb guard used to
    hide this behind "not a readable image"); a broken image names its
    format and the fault. An image that cannot be read is never skipped:
    the read stops, and nothing is written."""
    issued = world.issue()
    scans = tmp_path / "scans"
    _pngs(issued.data, scans)
    huge = scans / "huge.png"
    huge.write_bytes(_png_claiming(30000, 30000))
    out = tmp_path / "o.kit"
    proc = _kit(world, "qr", "decode", scans, "--out", out)
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert (
        f"image {huge}: 30000x30000 = 900,000,000 pixels, over the "
        "25,000,000-pixel cap; remove it or scale it down" in err
    )
    assert "Traceback" not in err and not out.exists()

    home = world.host_home("build-01")
    proc = _kit(world, "import", scans, "--home", home)
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert "over the 25,000,000-pixel cap" in err and "nothing imported" in err
    assert list((home / "inbox").iterdir()) == []
    denial = world.receipts()[-1]
    assert (denial.action, denial.reason) == ("import", "malformed")

    jpeg = tmp_path / "huge.jpg"
    jpeg.write_bytes(_jpeg_claiming(5001, 5000, tmp_path))
    with pytest.raises(FormatError, match="5001x5000 = 25,005,000 pixels, over"):
        qr.read_image(jpeg)
    good = qr.frame_image(qr.encode_frames(issued.data)[0])
    cut = tmp_path / "cut.png"
    cut.write_bytes(qr.png_bytes(good)[:200])
    with pytest.raises(FormatError, match=r"cut\.png: not a readable PNG image \("):
        qr.read_image(cut)
    gif = tmp_path / "photo.png"  # a GIF under a PNG name
    good.save(gif, format="GIF")
    with pytest.raises(FormatError, match=r"photo\.png: not a PNG or JPEG image"):
        qr.read_image(gif)
    assert qr.read_image(_save(good, tmp_path / "fine.png")) != []


def _save(img: Image.Image, path: Path) -> Path:
    img.save(path)
    return path
