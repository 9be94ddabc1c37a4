"""Check every committed vector in tests/vectors against its expected outcome.

The vectors are files, read as they are: nothing here regenerates them (run
``scripts/make_vectors.py --check`` for that). Each one goes through the same
library calls a host, signer or auditor makes. See tests/vectors/README.md.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from kit.audit.reconcile import Batch, reconcile
from kit.crypto import atrest
from kit.crypto.seal import SealingKey
from kit.crypto.sign import SigningKey, key_id, verify_signature
from kit.errors import DeniedError, KitError
from kit.formats import manifest as sums
from kit.formats.bundle import MAX_LIFETIME, MAX_USES, decode_claims, parse_bundle
from kit.formats.enrollment import load_enrollment
from kit.formats.trustroot import TrustRoot, load_trust_root
from kit.host.policy import HostPolicy
from kit.host.verifier import (
    HostIdentity,
    Request,
    Verified,
    authenticate,
    check_scope,
)
from kit.storage.base import HostRecord, IssuanceRecord

VECTORS = Path(__file__).parent / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
ENTRIES = {e["file"]: e for e in MANIFEST["vectors"]}
NOT_VECTORS = {"README.md", "manifest.json"}


def read(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def outcome(exc: KitError) -> str:
    """A denial is named by its reason code, anything else by its error type."""
    return exc.code if isinstance(exc, DeniedError) else type(exc).__name__


def pinned_root() -> TrustRoot:
    return load_trust_root(read(MANIFEST["trust_root"]))


def host_key() -> SealingKey:
    return SealingKey(read(MANIFEST["host"]["hpke_key"]))


def of_kind(kind: str) -> list[Any]:
    return [
        pytest.param(e, id=e["file"]) for e in MANIFEST["vectors"] if e["kind"] == kind
    ]


def test_every_file_is_listed() -> None:
    on_disk = {p.name for p in VECTORS.iterdir()} - NOT_VECTORS
    assert on_disk == set(ENTRIES), "run scripts/make_vectors.py"
    assert len(ENTRIES) == len(MANIFEST["vectors"]), "a file is listed twice"


def test_entries_carry_outcome_and_clock() -> None:
    for e in MANIFEST["vectors"]:
        assert e["expect"] and e["kind"] and e["note"], e["file"]
        assert e["now"] == MANIFEST["now"], e["file"]


@pytest.mark.parametrize("entry", of_kind("x25519-private-key"))
def test_x25519_key(entry: dict[str, Any]) -> None:
    key = SealingKey(read(entry["file"]))
    assert key.public_key.hex() == entry["public"]
    assert key_id(key.public_key) == entry["key_id"]


@pytest.mark.parametrize("entry", of_kind("ed25519-seed"))
def test_ed25519_seed(entry: dict[str, Any]) -> None:
    key = SigningKey(read(entry["file"]))
    assert key.public_key.hex() == entry["public"]
    assert key.key_id == entry["key_id"]


def test_signatures_are_openssls() -> None:
    """kit signs with libsodium; Ed25519 is deterministic, so OpenSSL (through
    cryptography) makes the same public key and signature from the same
    seed, and each verifies the other's."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
    )

    for i in range(20):
        seed = hashlib.sha256(b"seed %d" % i).digest()
        body = hashlib.sha512(b"body %d" % i).digest() * i
        ours = SigningKey(seed)
        theirs = Ed25519PrivateKey.from_private_bytes(seed)
        assert theirs.public_key().public_bytes_raw() == ours.public_key
        sig = ours.sign("kit/test/v1", body)
        assert sig == theirs.sign(b"kit/test/v1\x00" + body)
        theirs.public_key().verify(sig, b"kit/test/v1\x00" + body)
        assert verify_signature(ours.public_key, "kit/test/v1", body, sig)
        assert not verify_signature(ours.public_key, "kit/test/v2", body, sig)


@pytest.mark.parametrize("entry", of_kind("trust-root"))
def test_trust_root(entry: dict[str, Any]) -> None:
    try:
        load_trust_root(read(entry["file"]))
        got = "ok"
    except KitError as exc:
        got = outcome(exc)
    assert got == entry["expect"]


@pytest.mark.parametrize("entry", of_kind("enrollment"))
def test_enrollment(entry: dict[str, Any]) -> None:
    try:
        e = load_enrollment(read(entry["file"]))
        assert e.trust_root == pinned_root().digest
        assert e.hpke_public == host_key().public_key
        got = "ok"
    except KitError as exc:
        got = outcome(exc)
    assert got == entry["expect"]


def scope_kwargs(now: int) -> dict[str, Any]:
    """The host-side inputs of check_scope beyond the bundle: identity, policy
    (the manifest's leeway and risk levels are its only host-specific
    settings), clock floor, request (task, argv, datasets, delivery mode) and
    clock."""
    h = MANIFEST["host"]
    return {
        "root": pinned_root(),
        "host": HostIdentity(h["name"], h["env"], key_id(host_key().public_key)),
        "policy": HostPolicy(
            environments=(h["env"],),
            max_lifetime=MAX_LIFETIME,
            max_uses=MAX_USES,
            leeway=MANIFEST["leeway"],
            risk_levels=tuple(MANIFEST["risk_levels"]),
        ),
        "floor": MANIFEST["floor"],
        "request": Request(
            MANIFEST["task"],
            tuple(MANIFEST["command"]),
            tuple(MANIFEST["datasets"]),
            MANIFEST["delivery"],
        ),
        "now": now,
    }


def open_bundle(data: bytes, now: int) -> tuple[Verified, bytes]:
    """What a host does (FORMAT.md 5.4), minus the use counter."""
    verified = authenticate(data, pinned_root())
    check_scope(verified, **scope_kwargs(now))
    return verified, host_key().open(verified.bundle.sealed, verified.bundle.seal_info)


@pytest.mark.parametrize("entry", of_kind("bundle"))
def test_bundle(entry: dict[str, Any]) -> None:
    try:
        verified, secret = open_bundle(read(entry["file"]), entry["now"])
        got = "ok"
    except KitError as exc:
        got = outcome(exc)
        message = str(exc)
    assert got == entry["expect"]
    if "detail" in entry:
        # Refused after authentication: the error names the claim at fault
        # (a flaw found before the signature check is reported uniformly).
        assert entry["detail"] in message, message
    if got == "ok":
        assert secret == entry["secret"].encode()
        c = verified.claims
        assert c.identity == entry.get("identity", "")
        assert c.declaration.hex() == entry.get("declaration", "")
        if "owner" in entry:
            assert c.owner == entry["owner"]


def ledger() -> tuple[list[HostRecord], list[IssuanceRecord]]:
    """The signer's view the receipt vectors are reconciled against."""
    enrollment = read("enrollment-valid.kit")
    e = load_enrollment(enrollment)
    host = HostRecord(
        e.host,
        e.env,
        e.hpke_public,
        e.receipt_public,
        e.created_at,
        hashlib.sha256(enrollment).digest(),
    )
    data = read("bundle-valid.kit")
    b = parse_bundle(data)
    c = decode_claims(b.claims_bytes)
    issued = IssuanceRecord(
        bundle_id=c.bundle_id,
        host=c.host,
        env=c.env,
        task=c.task,
        owner=c.owner,
        issuer=c.issuer,
        commands=c.commands,
        issued_at=c.issued_at,
        not_before=c.not_before,
        expires_at=c.expires_at,
        max_uses=c.max_uses,
        claims=b.claims_bytes,
        bundle_digest=hashlib.sha256(data).digest(),
        secret_digest=bytes(32),
    )
    return [host], [issued]


@pytest.mark.parametrize("entry", of_kind("receipt-batch"))
def test_receipt_batch(entry: dict[str, Any]) -> None:
    names = [*entry.get("with", []), entry["file"]]
    hosts, bundles = ledger()
    report = reconcile(
        [Batch(n, read(n)) for n in names], hosts, bundles, now=entry["now"]
    )
    codes = [a.code for a in report.anomalies]
    assert codes == entry["anomalies"]
    assert (codes[0] if codes else "ok") == entry["expect"]
    if entry["expect"] == "ok":
        [status] = report.bundles
        assert (status.status, status.uses) == ("used", 1)


@pytest.mark.parametrize("entry", of_kind("sealed-key"))
def test_sealed_key(entry: dict[str, Any]) -> None:
    try:
        seed = atrest.open_key(read(entry["file"]), MANIFEST["passphrase"].encode())
        got = "ok"
    except KitError as exc:
        got = outcome(exc)
    assert got == entry["expect"]
    if got == "ok":
        assert seed.hex() == entry["opens_to"]


@pytest.mark.parametrize("entry", of_kind("sha256sums"))
def test_sha256sums(entry: dict[str, Any]) -> None:
    try:
        listed = sums.parse(read(entry["file"]))
        got = "ok"
    except KitError as exc:
        got = outcome(exc)
    assert got == entry["expect"]
    if got == "ok":
        for name, digest in listed.items():
            assert hashlib.sha256(read(name)).hexdigest() == digest
