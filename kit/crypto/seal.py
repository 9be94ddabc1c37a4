"""Sealing a secret to one host with RFC 9180 HPKE (base mode).

Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305. The
``info`` parameter binds the ciphertext to the bundle's claims (FORMAT.md
section 5.3): a ciphertext moved to other claims fails to open.
"""

from __future__ import annotations

import functools

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from kit.errors import DeniedError, FormatError

SUITE_NAME = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/ChaCha20Poly1305"
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
OVERHEAD = 32 + 16  # encapsulated key + AEAD tag


class SealingKey:
    """A host's X25519 private key. Never logged, never printed."""

    def __init__(self, raw: bytes) -> None:
        self._key = X25519PrivateKey.from_private_bytes(raw)
        self._raw = raw
        self.public_key = self._key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> SealingKey:
        return cls(X25519PrivateKey.generate().private_bytes_raw())

    def raw_unsafe(self) -> bytes:
        return self._raw

    def open(self, sealed: bytes, info: bytes) -> bytes:
        try:
            return _SUITE.decrypt(sealed, self._key, info=info)
        except (InvalidTag, ValueError):
            raise DeniedError(
                "seal-mismatch",
                "the sealed secret does not open with this host's key and these "
                "claims (sealed to another host, or moved from another bundle)",
            ) from None

    def __repr__(self) -> str:
        return "SealingKey(<private>)"


def seal(secret: bytes, public_key: bytes, info: bytes) -> bytes:
    """Seal to ``public_key``; FormatError when it is no usable X25519 key
    (see :func:`check_public_key`)."""
    try:
        return _SUITE.encrypt(secret, _public_key(public_key), info=info)
    except ValueError:
        raise FormatError(_UNUSABLE) from None


_UNUSABLE = (
    "the host's HPKE public key is not a usable X25519 key (not 32 bytes, or a "
    "low-order point, with which every shared secret is zero)"
)


def check_public_key(raw: bytes) -> None:
    """FormatError unless ``raw`` is an X25519 public key a secret can be
    sealed to: RFC 7748 section 6.1 refuses the all-zero shared secret that
    low-order points (all zeros, 1, ...) give whatever the private key, so
    one exchange with a fresh key tells."""
    try:
        X25519PrivateKey.generate().exchange(_public_key(raw))
    except ValueError:
        raise FormatError(_UNUSABLE) from None


@functools.lru_cache(maxsize=64)
def _public_key(raw: bytes) -> X25519PublicKey:
    """A host's public key object, made once per key: a signer issues to the
    same few hosts again and again. Public, immutable, and refused (not
    cached) when malformed."""
    return X25519PublicKey.from_public_bytes(raw)
