"""A public key handed to the signer, self-signed to prove its holder has the
private key (FORMAT.md 11): ``kit/public-key/v1`` over
``{"algorithm", "public_key", "label", "created_at"}``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kit import encoding
from kit.crypto.sign import ALGORITHM, PUB_LEN, SigningKey, key_id
from kit.errors import FormatError
from kit.formats.envelope import open_self_signed, seal_envelope

LABEL = "kit/public-key/v1"
CAP = 2048


@dataclass(frozen=True)
class PublicKeyFile:
    public_key: bytes
    label: str
    created_at: int

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)


def make_public_key_file(key: SigningKey, label: str, created_at: int) -> bytes:
    body = encoding.encode(
        {
            "algorithm": ALGORITHM,
            "public_key": key.public_key,
            "label": label,
            "created_at": created_at,
        }
    )
    return seal_envelope(LABEL, body, [key])


def load_public_key_file(data: bytes) -> PublicKeyFile:
    _, body = open_self_signed(
        data, label=LABEL, cap=CAP, what="public key file", signing_keys=_own_key
    )
    f = encoding.Fields(body, "public key file")
    f.choice("algorithm", (ALGORITHM,))
    pk = PublicKeyFile(
        public_key=f.binary("public_key", PUB_LEN),
        label=f.text("label", encoding.NAME_RE),
        created_at=f.time("created_at"),
    )
    f.done()
    return pk


def _own_key(body: Any) -> dict[str, bytes]:
    pub = body.get("public_key") if isinstance(body, dict) else None
    if not isinstance(pub, bytes) or len(pub) != PUB_LEN:
        raise FormatError("public key file holds no Ed25519 key")
    return {key_id(pub): pub}
