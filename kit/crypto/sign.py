"""Ed25519 signatures with a domain-separation label per object type.

The signed message is ``label || 0x00 || body`` where ``body`` is the exact
byte string received (docs/FORMAT.md section 3). Signing and verification
use libsodium through pynacl: its verification refuses non-canonical
signatures and small-order keys, and it is the fastest binding here
(docs/BENCHMARKS.md). Ed25519 signatures are deterministic, so any
conforming implementation makes the same bytes.
"""

from __future__ import annotations

import hashlib
import secrets

import nacl.bindings
import nacl.exceptions

ALGORITHM = "ed25519"
SIG_LEN = 64
PUB_LEN = 32


def key_id(public_key: bytes) -> str:
    """Stable identifier of a public key: 32 hex digits of a labelled SHA-256."""
    return hashlib.sha256(b"kit/key-id/v1\x00" + public_key).hexdigest()[:32]


def fingerprint(digest: bytes) -> str:
    """The first 160 bits of a digest in groups of four hex digits, as people
    compare fingerprints out of band."""
    h = digest.hex()[:40]
    return " ".join(h[i : i + 4] for i in range(0, len(h), 4))


def signed_message(label: str, body: bytes) -> bytes:
    return label.encode("ascii") + b"\x00" + body


class SigningKey:
    """An Ed25519 private key held in memory. Never logged, never printed."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        # libsodium's secret key: the seed followed by the public key.
        self.public_key, self._secret = nacl.bindings.crypto_sign_seed_keypair(seed)
        self._seed = seed
        self.key_id = key_id(self.public_key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(secrets.token_bytes(32))

    def seed_unsafe(self) -> bytes:
        """The raw seed, for sealing at rest only."""
        return self._seed

    def sign(self, label: str, body: bytes) -> bytes:
        # crypto_sign returns the signature followed by the message.
        return _sign(signed_message(label, body), self._secret)[:SIG_LEN]

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id})"


_sign = nacl.bindings.crypto_sign
_sign_open = nacl.bindings.crypto_sign_open


def verify_signature(public_key: bytes, label: str, body: bytes, sig: bytes) -> bool:
    """True when ``sig`` is a valid Ed25519 signature; never raises on bad input."""
    if len(public_key) != PUB_LEN or len(sig) != SIG_LEN:
        return False
    try:
        # What nacl.signing.VerifyKey.verify calls, without building a key
        # object per call: libsodium's crypto_sign_open over sig || message.
        # (PyNaCl 1.6 exposes no detached verify.)
        _sign_open(b"".join((sig, label.encode("ascii"), b"\x00", body)), public_key)
    except (
        nacl.exceptions.BadSignatureError,
        nacl.exceptions.ValueError,
        nacl.exceptions.TypeError,
    ):
        return False
    return True
