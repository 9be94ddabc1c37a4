"""Objects as QR frames, for air gaps where no USB stick may cross (FORMAT.md 13).

The frame layer is pure: :func:`encode_frames` turns an object into frame
strings, :func:`parse_frame` reads one back, :class:`Reassembler` puts one
message together and :class:`Collector` sorts frames of many messages.
Image I/O (PNG, PDF sheet, terminal, camera images) lives in the functions at
the end, which import Pillow, qrcode and zxing-cpp only when called, so that
the host's hot path (``kit verify``, ``kit run``) never loads them.

A frame header is never trusted: after reassembly the object's SHA-256 must
match the message id, and the object then goes through the same
authenticated checks as one read from media.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import stat
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kit import encoding
from kit.errors import FormatError, MediaError, UnauthenticatedError
from kit.formats import bundle, enrollment, pubkey, receipt, revocation, trustroot
from kit.formats.envelope import parse_envelope, peek_label
from kit.fsutil import read_regular

if TYPE_CHECKING:
    from PIL.Image import Image

VERSION = "KQ1"
ID_CHARS = 26  # base32 of the first 16 bytes of SHA-256(object)
DEFAULT_FRAME_BYTES = 700  # compressed bytes per frame: a typical bundle in one
MIN_FRAME_BYTES = 100
MAX_FRAME_BYTES = 1000
MAX_FRAMES = 1000
MAX_OBJECT = 1 << 20  # inflated object, whatever its type
MAX_MESSAGES = 64  # distinct messages one collection may hold
MAX_IMAGES = 2000
IMAGE_CAP = 32 * 1024 * 1024  # bytes of one image file
MAX_PIXELS = 25_000_000  # a 24-megapixel phone photo fits; decoding costs ~4 B/px
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
EC_LEVELS = ("M", "Q", "H")
_ALPHANUMERIC: Literal[2] = 2  # qrcode.util.MODE_ALPHA_NUM

_B32 = "[A-Z2-7]"
FRAME_RE = re.compile(
    rf"KQ1:({_B32}{{{ID_CHARS}}}):([0-9]{{4}}):([0-9]{{4}}):({_B32}+)"
)
MAX_FRAME_CHARS = len("KQ1:") + ID_CHARS + 11 + (MAX_FRAME_BYTES * 8 + 4) // 5

# The kinds a caption names, by envelope label. Any bytes up to MAX_OBJECT
# may cross: checking them is the receiving command's job.
KINDS: dict[str, str] = {
    bundle.LABEL: "bundle",
    trustroot.LABEL: "trust root",
    revocation.LABEL: "revocation list",
    enrollment.LABEL: "enrollment request",
    pubkey.LABEL: "public key",
    receipt.BATCH_LABEL: "receipt batch",
}


# -- frames -------------------------------------------------------------------


def message_id(obj: bytes) -> str:
    """The id every frame of ``obj`` carries: its digest, so it binds them."""
    return _b32(hashlib.sha256(obj).digest()[:16])


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _unb32(text: str) -> bytes | None:
    """Strict unpadded base32: None for an impossible length or stray bits."""
    if len(text) % 8 in (1, 3, 6):
        return None
    data = base64.b32decode(text + "=" * (-len(text) % 8))
    return data if _b32(data) == text else None


def kind_of(obj: bytes) -> tuple[str, str | None]:
    """The kind of object ``obj`` looks like, and its envelope label, read
    without any check of its signature: for captions and routing only."""
    label = peek_label(obj, MAX_OBJECT)
    if label in KINDS:
        return KINDS[label], label
    return "unknown object", None


def crossing_kind(obj: bytes, what: object) -> str:
    """The kind of ``obj`` when it is a kit object that crosses the gap (a
    label of :data:`KINDS`); FormatError otherwise, naming ``what``.

    Anyone who sees a QR code can read it, so ``kit qr encode`` takes only
    these kinds unless told otherwise (``--any-bytes``): a signer key, a
    passphrase file or a secret never becomes a picture by a slip of the
    keyboard. Routing only: the signature is not checked here.
    """
    kind, known = kind_of(obj)
    if known is not None:
        return kind
    label = peek_label(obj, MAX_OBJECT)
    what_it_is = (
        f"a {label} object, which does not cross the gap"
        if label is not None and label.startswith("kit/")
        else "not a kit object that crosses the gap"
    )
    raise FormatError(
        f"{what}: {what_it_is}; refused. kit qr encode carries "
        f"{', '.join(KINDS.values())}: anyone who sees the codes can read "
        "them. Pass --any-bytes to encode other bytes on purpose"
    )


def encode_frames(obj: bytes, frame_bytes: int = DEFAULT_FRAME_BYTES) -> list[str]:
    """Split ``obj`` into frame strings (FORMAT.md 13.1)."""
    if not MIN_FRAME_BYTES <= frame_bytes <= MAX_FRAME_BYTES:
        raise FormatError(
            f"frame size {frame_bytes} is outside {MIN_FRAME_BYTES} to "
            f"{MAX_FRAME_BYTES} bytes"
        )
    if len(obj) > MAX_OBJECT:
        raise FormatError(
            f"object of {len(obj)} bytes is over the {MAX_OBJECT}-byte QR cap"
        )
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = packer.compress(obj) + packer.flush()
    chunks = [packed[i : i + frame_bytes] for i in range(0, len(packed), frame_bytes)]
    if len(chunks) > MAX_FRAMES:
        raise FormatError(
            f"object needs {len(chunks)} frames, over the {MAX_FRAMES}-frame cap"
        )
    mid = message_id(obj)
    n = len(chunks)
    return [
        f"{VERSION}:{mid}:{i:04d}:{n:04d}:{_b32(c)}" for i, c in enumerate(chunks, 1)
    ]


@dataclass(frozen=True)
class Frame:
    message: str
    index: int  # 1-based
    total: int
    payload: bytes


def parse_frame(text: str) -> Frame:
    """Read one frame string, checking everything a frame alone can show."""
    if len(text) > MAX_FRAME_CHARS:
        raise FormatError(
            f"QR frame of {len(text)} characters is over the {MAX_FRAME_CHARS} cap"
        )
    if not text.startswith(VERSION + ":"):
        if re.match(r"KQ[0-9]+:", text):
            raise FormatError(
                f"QR frame version {text.split(':', 1)[0]} is not supported "
                f"(this kit reads {VERSION})"
            )
        raise FormatError("QR code is not a kit frame (no KQ1: prefix)")
    m = FRAME_RE.fullmatch(text)
    if m is None:
        raise FormatError("QR frame header is malformed (see FORMAT.md 13.1)")
    mid, index, total = m.group(1), int(m.group(2)), int(m.group(3))
    if not 1 <= total <= MAX_FRAMES:
        raise FormatError(
            f"QR frame claims {total} frames; 1 to {MAX_FRAMES} are allowed"
        )
    if not 1 <= index <= total:
        raise FormatError(f"QR frame index {index} is outside 1 to {total}")
    payload = _unb32(m.group(4))
    if payload is None:
        raise FormatError("QR frame payload is not canonical unpadded base32")
    return Frame(mid, index, total, payload)


class Reassembler:
    """One message's frames, in any order; duplicates are harmless, a
    different frame under a taken index or a changed total is refused."""

    def __init__(self, message: str, total: int) -> None:
        self.message = message
        self.total = total
        self.chunks: dict[int, bytes] = {}

    def add(self, frame: Frame) -> bool:
        """Take ``frame``; True when it was new. Raises FormatError when it
        contradicts the frames already taken."""
        if frame.message != self.message:
            raise FormatError(
                f"QR frame of message {frame.message} is not part of message "
                f"{self.message}"
            )
        if frame.total != self.total:
            raise FormatError(
                f"QR message {self.message[:8]}: frames disagree on the frame count "
                f"({self.total} vs {frame.total}); refused"
            )
        held = self.chunks.get(frame.index)
        if held is not None:
            if held != frame.payload:
                raise FormatError(
                    f"QR message {self.message[:8]}: two different frames "
                    f"{frame.index} of {self.total}; refused"
                )
            return False
        self.chunks[frame.index] = frame.payload
        return True

    @property
    def missing(self) -> list[int]:
        return [i for i in range(1, self.total + 1) if i not in self.chunks]

    @property
    def complete(self) -> bool:
        return len(self.chunks) == self.total

    def result(self) -> bytes:
        """The object, once every frame is in and its digest matches the id."""
        if not self.complete:
            raise FormatError(
                f"QR message {self.message[:8]}: {len(self.chunks)} of {self.total} "
                f"frames read; missing {_ranges(self.missing)}"
            )
        unpacker = zlib.decompressobj(-15)
        try:
            obj = unpacker.decompress(
                b"".join(self.chunks[i] for i in range(1, self.total + 1)),
                MAX_OBJECT + 1,
            )
        except zlib.error:
            raise FormatError(
                f"QR message {self.message[:8]}: payload is not a DEFLATE stream"
            ) from None
        if len(obj) > MAX_OBJECT:
            raise FormatError(
                f"QR message {self.message[:8]}: inflates to over {MAX_OBJECT} bytes"
            )
        if not unpacker.eof or unpacker.unused_data:
            raise FormatError(
                f"QR message {self.message[:8]}: DEFLATE stream truncated or followed "
                "by extra bytes"
            )
        if message_id(obj) != self.message:
            raise FormatError(
                f"QR message {self.message[:8]}: reassembled object's SHA-256 does "
                "not match the message id; refused"
            )
        return obj


def _ranges(indexes: list[int]) -> str:
    out: list[str] = []
    for i in indexes:
        if out and out[-1].split("-")[-1] == str(i - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ", ".join(out[:20]) + (" ..." if len(out) > 20 else "")


@dataclass
class Collector:
    """Frames from many images, sorted into messages by id, never blended."""

    messages: dict[str, Reassembler] = field(default_factory=dict)
    new: int = 0
    duplicates: int = 0

    def add(self, text: str) -> Frame:
        frame = parse_frame(text)
        r = self.messages.get(frame.message)
        if r is None:
            if len(self.messages) >= MAX_MESSAGES:
                raise FormatError(
                    f"frames of more than {MAX_MESSAGES} messages; refused"
                )
            r = self.messages[frame.message] = Reassembler(frame.message, frame.total)
        if r.add(frame):
            self.new += 1
        else:
            self.duplicates += 1
        return frame

    def progress(self) -> list[str]:
        """One line per message: frames seen and missing."""
        lines = []
        for mid, r in self.messages.items():
            state = "complete" if r.complete else f"missing {_ranges(r.missing)}"
            lines.append(
                f"message {mid[:8]}: {len(r.chunks)} of {r.total} frames, {state}"
            )
        return lines

    def results(self) -> dict[str, bytes]:
        """Every message, each complete and checked; raises on the first one
        that is not."""
        if not self.messages:
            raise FormatError("no kit QR frame was read")
        return {mid: r.result() for mid, r in sorted(self.messages.items())}


# -- what an object is, for captions and names (unauthenticated) -------------


@dataclass(frozen=True)
class Description:
    """For display and routing only: read before any signature is checked."""

    kind: str
    ident: str
    expires_at: int | None = None


def describe(obj: bytes) -> Description:
    kind, label = kind_of(obj)
    if label is None:
        return Description(kind, "?")
    try:
        return _describe(label, kind, obj)
    except (FormatError, UnauthenticatedError):
        return Description(kind, "unreadable")


def _describe(label: str, kind: str, obj: bytes) -> Description:
    if label == bundle.LABEL:
        c = bundle.decode_claims(bundle.parse_bundle(obj).claims_bytes)
        return Description(kind, c.bundle_id, c.expires_at)
    if label == trustroot.LABEL:
        root = trustroot.load_trust_root(obj)  # self-signed: integrity only
        return Description(kind, f"{root.name} v{root.version}", root.expires_at)
    if label == revocation.LABEL:
        env = parse_envelope(obj, label=label, cap=revocation.CAP, what=kind)
        body = encoding.decode(env.body, cap=revocation.CAP, what=kind)
        f = encoding.Fields(body, kind)
        name = f.text("name", encoding.NAME_RE)
        version = f.integer("version", 1, 1 << 40)
        return Description(kind, f"{name} v{version}", f.time("expires_at"))
    if label == enrollment.LABEL:
        e = enrollment.load_enrollment(obj)
        return Description(kind, f"{e.host} ({e.env})")
    if label == pubkey.LABEL:
        k = pubkey.load_public_key_file(obj)
        return Description(kind, f"{k.label} {k.key_id[:12]}")
    items, cp_raw = receipt.split_batch(obj)
    cp = receipt.parse_checkpoint(cp_raw)
    return Description(
        kind, f"{cp.host} {cp.first_seq}..{cp.seq} ({len(items)} receipts)"
    )


# The media name class of each label a host imports (FORMAT.md 10, 13.3).
MEDIA_NAMES = {
    bundle.LABEL: "bundle-{}.kit",
    trustroot.LABEL: "trust-root-{}.kit",
    revocation.LABEL: "revocations.kit",
    receipt.BATCH_LABEL: "receipts-{}.kit",
}


def media_name(obj: bytes, message: str) -> str:
    """The media file name a host imports ``obj`` under: its class from the
    envelope label, made unique by the message id. Nothing else is read
    from the object before the import authenticates it."""
    kind, label = kind_of(obj)
    pattern = MEDIA_NAMES.get(label or "")
    if pattern is None:
        raise MediaError(f"{kind}: not something a host imports")
    return pattern.format(message.lower())


def caption(d: Description, index: int, total: int, obj: bytes) -> str:
    """The line printed under a frame: kind, id, position, the first 12 hex
    digits of the object's SHA-256 and its expiry where it has one."""
    from datetime import UTC, datetime

    digest = hashlib.sha256(obj).hexdigest()[:12]
    text = f"{d.kind} {d.ident} - frame {index} of {total} - sha256 {digest}"
    if d.expires_at is not None:
        when = datetime.fromtimestamp(d.expires_at, UTC).strftime("%Y-%m-%d %H:%M")
        text += f" - expires {when}Z"
    return text


# -- images (Pillow, qrcode and zxing-cpp are imported here only) ------------


def frame_image(text: str, ec: str = "M", box: int = 4) -> Image:
    """One frame as a black-on-white QR image in alphanumeric mode."""
    import qrcode
    import qrcode.constants
    import qrcode.util
    from PIL import Image as PILImage

    levels = {
        "M": qrcode.constants.ERROR_CORRECT_M,
        "Q": qrcode.constants.ERROR_CORRECT_Q,
        "H": qrcode.constants.ERROR_CORRECT_H,
    }
    if ec not in levels:
        raise FormatError(f"error correction {ec!r}: choose one of M, Q, H")
    code = qrcode.QRCode(error_correction=levels[ec], border=4)
    code.add_data(qrcode.util.QRData(text, mode=_ALPHANUMERIC))
    code.make(fit=True)
    matrix = code.get_matrix()
    size = len(matrix)
    img = PILImage.new("L", (size, size), 255)
    img.putdata([0 if dark else 255 for row in matrix for dark in row])
    return img.resize((size * box, size * box), PILImage.Resampling.NEAREST)


def terminal_text(text: str) -> str:
    """A frame drawn with Unicode half blocks, for a screen-to-camera hop."""
    import io

    import qrcode
    import qrcode.util

    code = qrcode.QRCode(border=2)
    code.add_data(qrcode.util.QRData(text, mode=_ALPHANUMERIC))
    code.make(fit=True)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue()


def png_bytes(img: Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def pdf_sheet(
    frames: list[str], captions: list[str], ec: str = "M", dpi: int = 150
) -> bytes:
    """A printable A4 sheet, as many frames per page as fit with a caption
    under each; captions are informational, never trusted."""
    import io

    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    page_w, page_h = int(8.27 * dpi), int(11.69 * dpi)
    margin, gap = dpi // 2, dpi // 6
    font = ImageFont.load_default(size=max(10, dpi // 12))
    cols = 2
    cell_w = (page_w - 2 * margin - gap) // cols
    pages: list[PILImage.Image] = []
    page: PILImage.Image | None = None
    x = y = row_h = col = 0
    for text, cap in zip(frames, captions, strict=True):
        img = frame_image(text, ec, box=1)
        box = max(1, cell_w // img.width)
        img = img.resize(
            (img.width * box, img.height * box), PILImage.Resampling.NEAREST
        )
        cell_h = img.height + dpi // 3
        if page is None or y + cell_h > page_h - margin:
            page = PILImage.new("L", (page_w, page_h), 255)
            pages.append(page)
            x, y, col, row_h = margin, margin, 0, 0
        page.paste(img, (x, y))
        draw = ImageDraw.Draw(page)
        for n, line in enumerate(_wrap(cap, 48)):
            draw.text((x + 4, y + img.height + n * (dpi // 9)), line, fill=0, font=font)
        row_h = max(row_h, cell_h)
        col += 1
        if col == cols:
            x, y, col, row_h = margin, y + row_h + gap, 0, 0
        else:
            x += cell_w + gap
    buf = io.BytesIO()
    pages[0].save(
        buf, format="PDF", save_all=True, append_images=pages[1:], resolution=dpi
    )
    return buf.getvalue()


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for part in text.split(" - "):
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " - " + part
        else:
            lines.append(part)
    return lines


def read_image(path: Path) -> list[str]:
    """Every QR code zxing-cpp finds in the image at ``path``, as text.

    Raises FormatError naming the image when it is not a readable PNG or
    JPEG, or is over :data:`IMAGE_CAP` bytes or :data:`MAX_PIXELS` pixels
    (FORMAT.md 13.2): the read is then refused as a whole, never continued
    without it. The pixel count comes from the header, before any pixel is
    decoded.
    """
    import zxingcpp
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    data = read_regular(path, IMAGE_CAP, "image")
    where = f"image {path}"
    try:
        img = _open_unchecked(PILImage, io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        raise FormatError(f"{where}: not a PNG or JPEG image{_AGAIN}") from None
    with img:
        if img.width * img.height > MAX_PIXELS:
            raise FormatError(
                f"{where}: {img.width}x{img.height} = {img.width * img.height:,} "
                f"pixels, over the {MAX_PIXELS:,}-pixel cap; remove it or scale "
                "it down, then read again"
            )
        try:
            gray = img.convert("L")  # decodes the pixels
        except (OSError, ValueError, SyntaxError) as exc:  # truncated, corrupt
            raise FormatError(
                f"{where}: not a readable {img.format} image ({exc}){_AGAIN}"
            ) from None
    found = zxingcpp.read_barcodes(
        gray, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    )
    return [b.text for b in found if b.valid]


_AGAIN = "; remove it or take it again, then read again"


def _open_unchecked(pil: Any, stream: io.BytesIO) -> Image:
    """Open a PNG or JPEG lazily (header only) with Pillow's own pixel guard
    off: it would refuse a large image with its own limit and no size, or
    only warn. :func:`read_image` checks :data:`MAX_PIXELS` itself before
    any pixel is decoded."""
    guard = pil.MAX_IMAGE_PIXELS
    pil.MAX_IMAGE_PIXELS = None
    try:
        img: Image = pil.open(stream, formats=("PNG", "JPEG"))
        return img
    finally:
        pil.MAX_IMAGE_PIXELS = guard


def image_paths(targets: Iterable[Path]) -> list[Path]:
    """The images named, or in the folders named (their .png/.jpg/.jpeg
    files, sorted); symbolic links and other non-regular files are refused."""
    out: list[Path] = []
    for target in targets:
        st = _lstat(target)
        if stat.S_ISDIR(st.st_mode):
            for entry in sorted(os.scandir(target), key=lambda e: e.name):
                if entry.name.lower().endswith(IMAGE_SUFFIXES):
                    out.append(_regular(Path(entry.path)))
        else:
            out.append(_regular(target))
        if len(out) > MAX_IMAGES:
            raise MediaError(f"more than {MAX_IMAGES} images; refused")
    if not out:
        raise MediaError("no PNG or JPEG image to read")
    return out


def _lstat(path: Path) -> os.stat_result:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise MediaError(f"{path}: no such file or folder") from None
    if stat.S_ISLNK(st.st_mode):
        raise MediaError(f"{path}: is a symbolic link; refused")
    return st


def _regular(path: Path) -> Path:
    if not stat.S_ISREG(_lstat(path).st_mode):
        raise MediaError(f"{path}: not a regular file; refused")
    return path


def is_image_folder(folder: Path) -> bool:
    """A folder of QR images: no SHA256SUMS, at least one entry, and every
    entry a .png/.jpg/.jpeg name (FORMAT.md 13.3)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return bool(names) and all(n.lower().endswith(IMAGE_SUFFIXES) for n in names)


@dataclass
class ImageReport:
    collector: Collector
    empty: list[Path]  # images in which no QR code was found


def collect_images(paths: list[Path], progress: Any = None) -> ImageReport:
    """Decode every image into one :class:`Collector`. ``progress``, when
    given, is called with a line after each image."""
    collector = Collector()
    empty: list[Path] = []
    for n, path in enumerate(paths, 1):
        texts = read_image(path)
        if not texts:
            empty.append(path)
        for text in texts:
            try:
                collector.add(text)
            except FormatError as exc:
                raise FormatError(f"image {path}: {exc}") from None
        if progress is not None:
            progress(
                f"{n}/{len(paths)} images: {collector.new} frames, "
                f"{collector.duplicates} duplicates"
            )
    return ImageReport(collector, empty)
