"""In-process figures: verify and open one bundle, peers, issue one bundle."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import nacl.signing
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from bench.world import SECRET_64, World, random_secret
from kit import encoding
from kit.crypto.seal import SealingKey
from kit.crypto.sign import key_id, signed_message
from kit.formats.bundle import LABEL, parse_bundle
from kit.formats.trustroot import load_trust_root
from kit.host.host import HPKE_KEY, ROOT_FILE
from kit.host.policy import load_policy
from kit.host.verifier import HostIdentity, Request, authenticate, check_scope

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def verify_and_open(world: World, data: bytes) -> dict[str, Callable[[], object]]:
    """kit's steps 1-14 plus the HPKE open, and the floor on the same bytes."""
    home: Path = world.host_home
    raw_key = (home / HPKE_KEY).read_bytes()
    sealing = SealingKey(raw_key)
    root = load_trust_root((home / ROOT_FILE).read_bytes())
    policy = load_policy(home)
    ident = HostIdentity("bench-01", "prod", key_id(sealing.public_key))
    request = Request("nightly-export", ("true",), (), "env")

    def kit_verify_open() -> bytes:
        now = int(time.time())
        v = authenticate(data, root)
        check_scope(
            v, root=root, host=ident, policy=policy, floor=0, request=request, now=now
        )
        return sealing.open(v.bundle.sealed, v.bundle.seal_info)

    def kit_verify_only() -> object:
        now = int(time.time())
        v = authenticate(data, root)
        check_scope(
            v, root=root, host=ident, policy=policy, floor=0, request=request, now=now
        )
        return v

    # The floor: the same signature and ciphertext, primitives only.
    b = parse_bundle(data)
    ((kid, sig),) = b.envelope.signatures
    pub = root.keys_for("issuer")[kid]
    message = signed_message(LABEL, b.envelope.body)
    sealed, info = b.sealed, b.seal_info
    x25519 = X25519PrivateKey.from_private_bytes(raw_key)

    def floor() -> bytes:
        nacl.signing.VerifyKey(pub).verify(message, sig)
        return SUITE.decrypt(sealed, x25519, info=info)

    if not kit_verify_open() == floor() == SECRET_64:
        raise RuntimeError("kit and the floor opened different secrets")
    return {
        "kit": kit_verify_open,
        "kit-verify-only": kit_verify_only,
        "floor": floor,
    }


def issue(world: World) -> dict[str, Callable[[], object]]:
    """kit's Signer.issue (checks, seal, sign, ledger commit) and two floors:
    one HPKE seal and one Ed25519 signature (libsodium) of a body the same
    size, no ledger; and the same plus one append of the signed bytes (about
    the bundle's size) to a file on the ledger's disk, fsync'd before
    returning: the least a durable
    issuance can cost (``close`` in the result closes that file)."""
    req = world.request()
    signer = world.signer
    host = signer.ledger.get_host("bench-01")
    if host is None:
        raise RuntimeError("the bench host is not enrolled")
    host_pub = X25519PublicKey.from_public_bytes(host.hpke_public)
    sk = nacl.signing.SigningKey(bytes(32))
    claims = parse_bundle(world.issue()).claims_bytes
    info = b"kit/bundle-seal/v1\x00" + bytes(32)

    def kit_issue() -> object:
        return signer.issue(req, random_secret(), int(time.time()))

    def floor() -> bytes:
        sealed = SUITE.encrypt(random_secret(), host_pub, info=info)
        body = encoding.encode({"claims": claims, "sealed": sealed})
        return bytes(sk.sign(b"kit/bundle/v1\x00" + body))

    # The durable floor appends to a file beside the ledger (same disk).
    fd = os.open(
        world.signer_home / ".bench-durable-floor",
        os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC,
        0o600,
    )
    fds.append(fd)

    def durable_floor() -> object:
        signed = floor()
        os.write(fd, signed)
        os.fsync(fd)
        return signed

    return {"kit": kit_issue, "floor": floor, "durable-floor": durable_floor}


fds: list[int] = []


def close() -> None:
    """Close the durable floor's files."""
    while fds:
        os.close(fds.pop())
