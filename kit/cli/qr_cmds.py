"""``kit qr``: carry any kit object across an air gap as QR codes (docs/qr.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from kit import qr
from kit.cli.common import JsonOpt, emit_json, handled, say
from kit.errors import FormatError, MediaError, UsageError
from kit.fsutil import atomic_write, output_folder, read_regular
from kit.media import write_media

qr_app = typer.Typer(
    help="Carry kit objects across an air gap as QR codes, both ways.\n\n"
    "Paper: kit qr encode bundle.kit --pdf sheet.pdf --ec Q\n\n"
    "Screen: kit qr encode receipts.kit --terminal\n\n"
    "Camera: kit qr decode photos/ --out bundle.kit",
    no_args_is_help=True,
)


@qr_app.command("encode")
@handled()
def encode(
    file: Annotated[
        Path,
        typer.Argument(
            help="A kit object: bundle, trust root, revocation "
            "list, enrollment request, public key, receipt batch."
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write one PNG per frame here.")
    ] = None,
    pdf: Annotated[
        Path | None,
        typer.Option("--pdf", help="Write a printable A4 sheet (PDF) of all frames."),
    ] = None,
    terminal: Annotated[
        bool,
        typer.Option(
            "--terminal", help="Draw the frames on stdout (Enter between frames)."
        ),
    ] = False,
    ec: Annotated[
        str,
        typer.Option(help="Error correction: M (screens), Q or H (paper, creases)."),
    ] = "M",
    frame_bytes: Annotated[
        int,
        typer.Option(
            min=qr.MIN_FRAME_BYTES,
            max=qr.MAX_FRAME_BYTES,
            help="Compressed object bytes per frame; smaller frames suit weaker "
            "cameras.",
        ),
    ] = qr.DEFAULT_FRAME_BYTES,
    any_bytes: Annotated[
        bool,
        typer.Option(
            "--any-bytes",
            help="Also encode a file that is not a kit object that crosses the "
            "gap (for tests, or another kit object such as a ledger export). "
            "Anyone who sees the codes can read what they carry.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing --pdf file, and frame images in --out that "
            "differ from the ones written now.",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Turn a kit object into QR frames: PNG files, a PDF sheet or the terminal.

    Only a kit object that crosses the gap is taken (bundle, trust root,
    revocation list, enrollment request, public key, receipt batch): anyone
    who sees the codes can read them, so a key or a secret file is refused
    (exit 3) unless --any-bytes. An existing --pdf file, or a frame image in
    --out that differs from the one written now, is refused (exit 4) unless
    --force; nothing is written then.

    Each frame carries format version, message id (from the object's SHA-256),
    index and total; the caption under each frame (kind, id, frame i of n,
    digest prefix, expiry) is read from the object without checking its
    signature and is for people only.

    Example: kit qr encode bundle-0f3c....kit --pdf sheet.pdf --ec Q
    """
    if out is None and pdf is None and not terminal:
        raise UsageError("say where the frames go: --out DIR, --pdf FILE or --terminal")
    if ec not in qr.EC_LEVELS:
        raise UsageError(f"--ec {ec!r}: choose one of M, Q, H")
    obj = read_regular(file, qr.MAX_OBJECT, "object")
    if any_bytes and qr.kind_of(obj)[1] is None:
        say(
            f"warning: {file} is not a kit object that crosses the gap; encoding "
            "it anyway (--any-bytes): anyone who sees the codes can read it"
        )
    elif not any_bytes:
        qr.crossing_kind(obj, file)
    frames = qr.encode_frames(obj, frame_bytes)
    desc = qr.describe(obj)
    n = len(frames)
    captions = [qr.caption(desc, i, n, obj) for i in range(1, n + 1)]
    mid = qr.message_id(obj)
    # Every destination is checked before anything is written.
    pngs = _render_pngs(out, mid, frames, ec) if out is not None else {}
    _refuse_overwrite(pdf, pngs, force)
    written: list[str] = []
    if out is not None:
        written += [str(p) for p in _write_pngs(out, pngs)]
    if pdf is not None:
        say(f"composing a {n}-frame sheet")
        atomic_write(pdf, qr.pdf_sheet(frames, captions, ec))
        written.append(str(pdf))
    if terminal:
        _show(frames, captions)
    if json_out:
        emit_json(
            {
                "kind": desc.kind,
                "id": desc.ident,
                "expires_at": desc.expires_at,
                "message": mid,
                "frames": n,
                "files": written,
            }
        )
    say(f"{desc.kind} {desc.ident}: {n} frame(s), message {mid[:8]}, EC {ec}")


def _render_pngs(out: Path, mid: str, frames: list[str], ec: str) -> dict[Path, bytes]:
    """Each frame's file name in ``out`` and PNG bytes (rendering is
    deterministic: the same frame at the same EC gives the same bytes)."""
    n = len(frames)
    return {
        out / f"kq-{mid[:8].lower()}-{i:04d}-of-{n:04d}.png": qr.png_bytes(
            qr.frame_image(text, ec)
        )
        for i, text in enumerate(frames, 1)
    }


def _same(path: Path, data: bytes) -> bool:
    """True when ``path`` is a regular file holding exactly ``data``."""
    try:
        return read_regular(path, len(data), "frame image") == data
    except (MediaError, FormatError):
        return False


def _refuse_overwrite(pdf: Path | None, pngs: dict[Path, bytes], force: bool) -> None:
    """Refuse (MediaError, exit 4) to replace an existing --pdf file or a frame
    image that differs from the one about to be written, unless --force. An
    identical frame image (the same object encoded again) is left as it is."""
    if force:
        return
    taken = [p for p, data in pngs.items() if os.path.lexists(p) and not _same(p, data)]
    if pdf is not None and os.path.lexists(pdf):
        taken.append(pdf)
    if taken:
        shown = ", ".join(str(p) for p in taken[:5])
        more = f" and {len(taken) - 5} more" if len(taken) > 5 else ""
        verb = "exists" if len(taken) == 1 else "exist"
        raise MediaError(
            f"{shown}{more} already {verb}; nothing written. Choose another "
            "name or an empty folder, or pass --force to replace"
        )


def _write_pngs(out: Path, pngs: dict[Path, bytes]) -> list[Path]:
    output_folder(out)
    for i, (path, data) in enumerate(pngs.items(), 1):
        if not _same(path, data):
            atomic_write(path, data)
        if len(pngs) > 1:
            say(f"frame {i}/{len(pngs)} -> {path}")
    return list(pngs)


def _show(frames: list[str], captions: list[str]) -> None:
    interactive = sys.stdin.isatty() and len(frames) > 1
    for i, (text, cap) in enumerate(zip(frames, captions, strict=True), 1):
        print(qr.terminal_text(text))
        print(cap, flush=True)
        if interactive and i < len(frames):
            try:
                input("Enter for the next frame ")
            except EOFError:
                n = len(frames)
                rest = f"frame {n} was" if i + 1 == n else f"frames {i + 1}..{n} were"
                raise UsageError(
                    f"stopped after frame {i} of {n}: end of input (Ctrl-D) "
                    f"at the prompt; {rest} not shown"
                ) from None


@qr_app.command("decode")
@handled()
def decode(
    images: Annotated[
        list[Path], typer.Argument(help="PNG/JPEG images, or folders of them.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the object to this file.")
    ] = None,
    media: Annotated[
        Path | None,
        typer.Option(
            "--media",
            help="Add the object to this media folder (SHA256SUMS) under its media "
            "name, e.g. for 'kit reconcile'.",
        ),
    ] = None,
    message: Annotated[
        str | None,
        typer.Option(
            help="Message id (or its first characters) to keep when the images "
            "hold several complete messages."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing --out file."),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Read QR frames from camera images, in any order, and rebuild the object.

    Duplicates are dropped; frames of other messages are set aside, never
    mixed in; frames that contradict each other are refused (exit 3). The
    object's SHA-256 must match the message id. Check the object itself with
    the command that uses it (kit import, kit enroll, kit reconcile). An
    existing --out file is refused (exit 4) unless --force.

    Example: kit qr decode photos/ --out bundle.kit

    Example: kit qr decode photos/ --media batches/ && kit reconcile batches/
    """
    if out is not None and media is not None:
        raise UsageError("--out and --media exclude each other")
    if out is None and media is None:
        raise UsageError("say where the object goes: --out FILE or --media DIR")
    if out is not None and not force and os.path.lexists(out):
        raise MediaError(
            f"{out} already exists; nothing read or written. Choose another "
            "name, or pass --force to replace it"
        )
    paths = qr.image_paths(images)
    report = qr.collect_images(paths, say)
    for path in report.empty:
        say(f"no QR code found in {path}")
    for line in report.collector.progress():
        say(line)
    mid = _choose(report.collector, message)
    obj = report.collector.messages[mid].result()
    dest = _write(obj, mid, out, media)
    desc = qr.describe(obj)
    aside = [m for m in report.collector.messages if m != mid]
    for other in aside:
        say(f"set aside the frames of message {other[:8]} (another object)")
    if json_out:
        emit_json(
            {
                "kind": desc.kind,
                "id": desc.ident,
                "message": mid,
                "bytes": len(obj),
                "file": str(dest),
                "set_aside": aside,
                "no_code": [str(p) for p in report.empty],
            }
        )
    say(f"wrote {desc.kind} {desc.ident} ({len(obj)} bytes) to {dest}")


def _write(obj: bytes, mid: str, out: Path | None, media: Path | None) -> Path:
    if media is not None:
        return write_media(media, {qr.media_name(obj, mid): obj})[0]
    if out is None:
        raise UsageError("say where the object goes: --out FILE or --media DIR")
    atomic_write(out, obj)
    return out


def _choose(collector: qr.Collector, wanted: str | None) -> str:
    messages = collector.messages
    if not messages:
        raise FormatError("no kit QR frame was found in the images")
    if wanted is not None:
        hits = [m for m in messages if m.startswith(wanted.upper())]
        if len(hits) != 1:
            raise UsageError(
                f"--message {wanted}: matches {len(hits)} of the messages read "
                f"({', '.join(m[:8] for m in messages)})"
            )
        return hits[0]
    done = [m for m, r in messages.items() if r.complete]
    if len(done) == 1:
        return done[0]
    if len(done) > 1:
        raise UsageError(
            f"the images hold {len(done)} complete messages "
            f"({', '.join(m[:8] for m in done)}); choose one with --message"
        )
    if len(messages) == 1:
        return next(iter(messages))  # result() names the missing frames
    raise FormatError("no message is complete: " + "; ".join(collector.progress()))
