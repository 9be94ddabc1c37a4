"""Bundle size and QR frames for a 64-byte secret and two commands."""

from __future__ import annotations

from typing import Any

from kit.crypto.seal import OVERHEAD
from kit.crypto.sign import SIG_LEN

SECRET_LEN = 64
FLOOR = SECRET_LEN + SIG_LEN + OVERHEAD  # secret + signature + HPKE overhead


def bundle_size(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"bytes": len(data), "floor_bytes": FLOOR}
    try:
        from kit import qr
    except ImportError as exc:  # the QR helper not landed yet
        out["frames"] = None
        out["frames_note"] = f"kit.qr not importable ({exc})"
        return out
    frames = qr.encode_frames(data)
    out["frames"] = len(frames)
    out["frame_chars"] = [len(f) for f in frames]
    out["frame_payload_bytes"] = qr.DEFAULT_FRAME_BYTES
    return out
