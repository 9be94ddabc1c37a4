"""Enrollment request: a host's public keys, self-signed (FORMAT.md 6)."""

from __future__ import annotations

from dataclasses import dataclass

from kit import encoding
from kit.crypto.sign import PUB_LEN, SigningKey, key_id
from kit.formats.envelope import parse_envelope, seal_envelope, verify_envelope

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
    env = parse_envelope(data, label=LABEL, cap=CAP, what="enrollment request")
    f = encoding.Fields(
        encoding.decode(env.body, cap=CAP, what="enrollment body"), "enrollment request"
    )
    e = Enrollment(
        host=f.text("host", encoding.NAME_RE),
        env=f.text("env", encoding.NAME_RE),
        hpke_public=f.binary("hpke_public", 32),
        receipt_public=f.binary("receipt_public", PUB_LEN),
        trust_root=f.binary("trust_root", 32),
        created_at=f.time("created_at"),
    )
    f.done()
    verify_envelope(
        env,
        {e.receipt_key_id: e.receipt_public},
        threshold=1,
        what="enrollment request",
    )
    return e
