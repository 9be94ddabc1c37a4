"""Enrollment request: a host's public keys, self-signed (FORMAT.md 6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kit import encoding
from kit.crypto.seal import check_public_key
from kit.crypto.sign import PUB_LEN, SigningKey, key_id
from kit.errors import FormatError
from kit.formats.envelope import open_self_signed, seal_envelope

LABEL = "kit/enrollment/v1"
CAP = 4096


@dataclass(frozen=True)
class Enrollment:
    host: str
    env: str
    hpke_public: bytes
    receipt_public: bytes
    trust_root: bytes
    created_at: int

    @property
    def receipt_key_id(self) -> str:
        return key_id(self.receipt_public)


def make_enrollment(e: Enrollment, receipt_key: SigningKey) -> bytes:
    body = encoding.encode(
        {
            "host": e.host,
            "env": e.env,
            "hpke_public": e.hpke_public,
            "receipt_public": e.receipt_public,
            "trust_root": e.trust_root,
            "created_at": e.created_at,
        }
    )
    return seal_envelope(LABEL, body, [receipt_key])


def load_enrollment(data: bytes) -> Enrollment:
    """Parse and check proof of possession of the receipt key."""
    _, body = open_self_signed(
        data,
        label=LABEL,
        cap=CAP,
        what="enrollment request",
        signing_keys=_receipt_key,
    )
    f = encoding.Fields(body, "enrollment request")
    e = Enrollment(
        host=f.text("host", encoding.NAME_RE),
        env=f.text("env", encoding.NAME_RE),
        hpke_public=f.binary("hpke_public", 32),
        receipt_public=f.binary("receipt_public", PUB_LEN),
        trust_root=f.binary("trust_root", 32),
        created_at=f.time("created_at"),
    )
    f.done()
    check_public_key(e.hpke_public)  # a key nothing can be sealed to is refused
    return e


def _receipt_key(body: Any) -> dict[str, bytes]:
    pub = body.get("receipt_public") if isinstance(body, dict) else None
    if not isinstance(pub, bytes) or len(pub) != PUB_LEN:
        raise FormatError("enrollment request has no receipt key")
    return {key_id(pub): pub}
