"""Regenerate tests/vectors/, the worked examples of docs/FORMAT.md.

Every vector is derived from fixed labels, so running this script twice gives
the same bytes: Ed25519 signatures are deterministic, and the randomized parts
(the HPKE ephemeral key, the Argon2id salt and the secretbox nonce) are fixed
here by an independent, spec-level implementation of FORMAT.md 5.3 and 9. A
host opening these bundles with kit's own HPKE code is therefore also an
interoperability check. Fixed ephemeral keys and nonces are for test vectors
only: kit itself draws them fresh for every seal.

Usage:
    python scripts/make_vectors.py            # write tests/vectors/
    python scripts/make_vectors.py --check    # exit 1 if the files differ
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any

import msgpack
import nacl.pwhash.argon2id as argon2id
import nacl.secret
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from kit import encoding
from kit.crypto.seal import SealingKey
from kit.crypto.sign import SigningKey, key_id
from kit.formats import bundle as bfmt
from kit.formats import receipt as rfmt
from kit.formats.enrollment import Enrollment, make_enrollment
from kit.formats.trustroot import make_trust_root
from kit.signer.identity import parse_identity

OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors"
HAND_WRITTEN = {"README.md"}

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z, the clock every vector assumes
DAY = 86_400
TASK = "nightly-export"
COMMAND = ["python3", "export.py", "--full"]
DATASETS = ["exports"]  # the datasets the request says the task touches
DELIVERY = "env"  # how the request has the secret delivered (kit run's default)
RISK_LEVELS = ["low", "medium"]  # the host policy's accepted risk levels
SECRET = b"vector-secret-not-a-real-token"
PASSPHRASE = "correct horse vector staple"  # noqa: S105 - test vector

# The workflow identity bundle-with-identity.kit is issued under: its claims
# carry the name and the SHA-256 of these exact bytes (kit/signer/identity.py).
IDENTITY = "nightly-export-prod"
DECLARATION = b"""\
# Test vector declaration (tests/vectors): the identity bundle-with-identity.kit
# is issued under. Its SHA-256 is the bundle's declaration claim.
name = "nightly-export-prod"
owner = "data-platform@example.com"
purpose = "Export the day's orders; a kit format test vector."
environment = "prod"
task = "nightly-export"
commands = [
    ["python3", "export.py"],
]
datasets = ["exports"]
risk = "low"
max_lifetime = "1d"
max_uses = 2
approvals = 0
rotation_period = "30d"
"""


def seed(label: str) -> bytes:
    return hashlib.sha256(b"kit-vectors/v1/" + label.encode()).digest()


ISSUER = SigningKey(seed("issuer"))
UNTRUSTED = SigningKey(seed("untrusted-issuer"))
HOST_HPKE = SealingKey(seed("host-hpke"))
HOST_RECEIPT = SigningKey(seed("host-receipt"))
OTHER_HPKE = SealingKey(seed("other-host-hpke"))


# -- RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20Poly1305


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out, i = out + block, i + 1
    return out[:length]


def _labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite + label + ikm)


def _labeled_expand(
    suite: bytes, prk: bytes, label: bytes, info: bytes, length: int
) -> bytes:
    return _expand(
        prk, length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info, length
    )


def hpke_seal(public: bytes, info: bytes, plaintext: bytes, eph_label: str) -> bytes:
    """HPKE SealBase with a fixed ephemeral key; output is ``enc || ct``."""
    kem_suite = b"KEM\x00\x20"
    suite = b"HPKE\x00\x20\x00\x01\x00\x03"
    sk_e = X25519PrivateKey.from_private_bytes(seed("ephemeral/" + eph_label))
    enc = sk_e.public_key().public_bytes_raw()
    dh = sk_e.exchange(X25519PublicKey.from_public_bytes(public))
    eae_prk = _labeled_extract(kem_suite, b"", b"eae_prk", dh)
    shared = _labeled_expand(kem_suite, eae_prk, b"shared_secret", enc + public, 32)
    context = (
        b"\x00"
        + _labeled_extract(suite, b"", b"psk_id_hash", b"")
        + _labeled_extract(suite, b"", b"info_hash", info)
    )
    secret = _labeled_extract(suite, shared, b"secret", b"")
    key = _labeled_expand(suite, secret, b"key", context, 32)
    nonce = _labeled_expand(suite, secret, b"base_nonce", context, 12)
    return enc + ChaCha20Poly1305(key).encrypt(nonce, plaintext, b"")


# -- low-level msgpack helpers for the broken variants --------------------------


def raw_map(pairs: list[tuple[str, bytes]]) -> bytes:
    """A msgpack map from already-encoded values, in the order given."""
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")
    return head + b"".join(encoding.encode(k) + v for k, v in pairs)


def envelope(label: str, body: bytes, sigs: list[list[Any]]) -> bytes:
    return encoding.encode([label, body, sigs])


def signed(label: str, body: bytes, key: SigningKey = ISSUER) -> bytes:
    return envelope(label, body, [[key.key_id, key.sign(label, body)]])


# -- bundles --------------------------------------------------------------------


def claims_map(**changes: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "bundle_id": "0123456789abcdef0123456789abcdef",
        "issuer": ISSUER.key_id,
        "owner": "vectors-team",
        "host": "build-01",
        "host_key": key_id(HOST_HPKE.public_key),
        "env": "prod",
        "task": TASK,
        "commands": [["python3", "export.py"], ["/usr/bin/true"]],
        "secret_name": "KIT_SECRET",
        "issued_at": NOW - 3600,
        "not_before": NOW - 3600,
        "expires_at": NOW + 8 * 3600,
        "max_uses": 2,
        "identity": "",
        "declaration": b"",
        "datasets": ["exports"],
        "risk": "low",
        "delivery": ["env", "fd", "file", "stdin"],
        "approvals": 0,
        "anchor_seq": 0,
        "anchor_head": b"",
    }
    c.update(changes)
    return c


def bundle(
    claims_bytes: bytes,
    name: str,
    *,
    to: bytes = HOST_HPKE.public_key,
    sealed: bytes | None = None,
    key: SigningKey = ISSUER,
) -> bytes:
    if sealed is None:
        sealed = hpke_seal(to, bfmt.seal_info_for(claims_bytes), SECRET, name)
    return signed(bfmt.LABEL, bfmt.encode_body(claims_bytes, sealed), key)


def bundle_vectors() -> list[tuple[str, bytes, str, str, dict[str, Any]]]:
    """(file, bytes, expected outcome, what is wrong with it, extra manifest
    fields)."""
    good_claims = encoding.encode(claims_map())
    good = bundle(good_claims, "valid")
    label, body, [[kid, sig]] = msgpack.unpackb(good)
    good_sealed = msgpack.unpackb(body)["sealed"]
    out: list[tuple[str, bytes, str, str, dict[str, Any]]] = [
        ("bundle-valid.kit", good, "ok", "valid; opens to the manifest's secret", {}),
    ]

    def add(name: str, data: bytes, expect: str, why: str, **extra: Any) -> None:
        out.append((f"bundle-{name}.kit", data, expect, why, extra))

    def with_claims(
        name: str,
        expect: str,
        why: str,
        extra: dict[str, Any] | None = None,
        **changes: Any,
    ) -> None:
        data = bundle(encoding.encode(claims_map(**changes)), name)
        add(name, data, expect, why, **(extra or {}))

    bad_sig = sig[:-1] + bytes([sig[-1] ^ 0x01])
    add(
        "bad-signature",
        envelope(label, body, [[kid, bad_sig]]),
        "UnauthenticatedError",
        "last signature bit flipped",
    )
    add(
        "untrusted-signer",
        bundle(good_claims, "valid", sealed=good_sealed, key=UNTRUSTED),
        "UnauthenticatedError",
        "signed by a key the trust root does not list",
    )
    add(
        "wrong-key-id",
        envelope(label, body, [[ISSUER.key_id, UNTRUSTED.sign(label, body)]]),
        "UnauthenticatedError",
        "untrusted key's signature presented under the issuer's key id",
    )
    add(
        "signed-under-other-label",
        envelope(label, body, [[kid, ISSUER.sign(rfmt.LABEL, body)]]),
        "UnauthenticatedError",
        "signature over 'kit/receipt/v1' || 0x00 || body (domain separation)",
    )
    add(
        "wrong-label",
        signed("kit/bundle/v2", body),
        "FormatError",
        "envelope label kit/bundle/v2, validly signed under it",
    )
    add(
        "two-signatures",
        envelope(label, body, [[kid, sig], [kid, sig]]),
        "ok",
        "the issuer's signature twice: a signer counts once, so this is valid",
    )
    add(
        "unsorted-keys",
        signed(
            bfmt.LABEL,
            raw_map(
                [
                    ("sealed", encoding.encode(good_sealed)),
                    ("claims", encoding.encode(good_claims)),
                ]
            ),
        ),
        "FormatError",
        "body map keys out of order (rejected before the signature check)",
    )
    dup = claims_map()
    pairs = [(k, encoding.encode(dup[k])) for k in sorted(dup)]
    pairs.insert(pairs.index(("task", encoding.encode(TASK))), ("task", b"\xa1x"))
    dup_claims = raw_map(pairs)
    add(
        "duplicate-key",
        bundle(dup_claims, "duplicate-key"),
        "FormatError",
        "claims map has 'task' twice; signed by the issuer",
    )
    nonmin = raw_map(
        [
            (k, b"\xcd\x00\x02" if k == "max_uses" else encoding.encode(dup[k]))
            for k in sorted(dup)
        ]
    )
    add(
        "non-minimal-int",
        bundle(nonmin, "non-minimal-int"),
        "FormatError",
        "max_uses as uint16 0xcd0002 instead of fixint 0x02; signed",
    )
    add("trailing-byte", good + b"\x00", "FormatError", "one byte appended")
    add("truncated", good[:-10], "FormatError", "last 10 bytes cut off")
    add(
        "oversized",
        signed(bfmt.LABEL, bytes(bfmt.CAP)),
        "FormatError",
        "over the 65536-byte bundle cap",
    )
    with_claims(
        "unknown-claim",
        "FormatError",
        "extra claim 'admin': true, signed and sealed consistently",
        admin=True,
    )
    with_claims(
        "float", "FormatError", "max_uses is the float 2.0; signed", max_uses=2.0
    )
    ext = raw_map(
        [
            (k, msgpack.packb(msgpack.ExtType(1, b"x")) if k == "owner" else v)
            for k, v in pairs
            if (k, v) != ("task", b"\xa1x")
        ]
    )
    add(
        "ext-type",
        bundle(ext, "ext-type"),
        "FormatError",
        "owner is msgpack ext type 1 (0xd4 01 78); signed",
    )
    with_claims(
        "empty-commands",
        "FormatError",
        "commands is empty: an empty scope allows nothing",
        commands=[],
    )
    with_claims(
        "lifetime-too-long",
        "FormatError",
        "expires_at - not_before is 91 days, over the 90-day cap",
        expires_at=NOW - 3600 + 91 * DAY,
    )
    with_claims(
        "expired",
        "expired",
        "expired 1 h before now, beyond the 30 s leeway",
        issued_at=NOW - 2 * DAY,
        not_before=NOW - 2 * DAY,
        expires_at=NOW - 3600,
    )
    with_claims(
        "not-yet-valid",
        "not-yet-valid",
        "not_before is 1 h after now",
        issued_at=NOW,
        not_before=NOW + 3600,
        expires_at=NOW + 8 * 3600,
    )
    other = claims_map(host="build-02", host_key=key_id(OTHER_HPKE.public_key))
    add(
        "for-other-host",
        bundle(encoding.encode(other), "for-other-host", to=OTHER_HPKE.public_key),
        "wrong-host",
        "claims and sealing name host build-02",
    )
    add(
        "sealed-to-other-host",
        bundle(good_claims, "sealed-to-other-host", to=OTHER_HPKE.public_key),
        "seal-mismatch",
        "claims name this host, secret sealed to build-02's key",
    )
    swapped = encoding.encode(claims_map(bundle_id="fedcba9876543210fedcba9876543210"))
    add(
        "claims-swapped",
        bundle(swapped, "claims-swapped", sealed=good_sealed),
        "seal-mismatch",
        "sealed secret of bundle-valid under other (signed) claims",
    )
    with_claims("wrong-env", "wrong-env", "for env staging", env="staging")
    with_claims(
        "wrong-task", "wrong-task", "for task weekly-report", task="weekly-report"
    )
    with_claims(
        "command-not-allowed",
        "command-not-allowed",
        "allows only 'python3 import.py'",
        commands=[["python3", "import.py"]],
    )
    with_claims(
        "dataset-not-allowed",
        "dataset-not-allowed",
        "datasets lists only 'audit-logs'; the request names 'exports'",
        datasets=["audit-logs"],
    )
    with_claims(
        "risk-high",
        "risk-not-accepted",
        "risk 'high'; the host policy accepts low and medium",
        risk="high",
    )
    with_claims(
        "delivery-fd-only",
        "delivery-not-allowed",
        "delivery is ['fd'] only; the request has the secret delivered by env",
        delivery=["fd"],
    )
    with_claims(
        "reserved-secret-name",
        "FormatError",
        "secret_name LD_PRELOAD is reserved (it changes how the child loads "
        "code); signed, so refused after authentication, naming the field",
        {"detail": "secret_name"},
        secret_name="LD_PRELOAD",  # noqa: S106 - a variable name, not a secret
    )
    with_claims(
        "identity-without-declaration",
        "FormatError",
        "identity set but declaration empty; signed, so refused after "
        "authentication, naming the field",
        {"detail": "declaration"},
        identity=IDENTITY,
    )
    ident = parse_identity(DECLARATION, Path(f"{IDENTITY}.toml"))
    assert ident.digest == hashlib.sha256(DECLARATION).hexdigest()  # noqa: S101
    with_claims(
        "with-identity",
        "ok",
        f"valid; issued under identity {IDENTITY} (declaration digest in "
        "'declaration'), owner a team mailbox",
        {"identity": IDENTITY, "declaration": ident.digest, "owner": ident.owner},
        bundle_id="00112233445566778899aabbccddeeff",
        owner=ident.owner,
        identity=IDENTITY,
        declaration=bytes.fromhex(ident.digest),
        datasets=list(ident.datasets),
        risk=ident.risk,
    )
    return out


# -- trust roots and enrollment -------------------------------------------------


def root_body(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "name": "vectors",
        "version": 1,
        "created_at": NOW - 30 * DAY,
        "expires_at": NOW + 335 * DAY,
        "keys": [
            {
                "algorithm": "ed25519",
                "key_id": ISSUER.key_id,
                "public_key": ISSUER.public_key,
                "roles": ["root", "issuer", "revoker"],
                "label": "signer",
            }
        ],
        "thresholds": {"root": 1, "issuer": 1, "revoker": 1},
        "approvals": {"low": 0, "medium": 0, "high": 0},
    }
    body.update(changes)
    return encoding.encode(body)


def root_vectors() -> list[tuple[str, bytes, str, str]]:
    good = make_trust_root(
        "vectors",
        ISSUER,
        version=1,
        created_at=NOW - 30 * DAY,
        expires_at=NOW + 335 * DAY,
    )
    assert good == signed("kit/trust-root/v1", root_body())  # noqa: S101
    label, body, [[kid, _]] = msgpack.unpackb(good)
    key = {
        "algorithm": "ed25519",
        "key_id": UNTRUSTED.key_id,
        "public_key": ISSUER.public_key,
        "roles": ["root", "issuer"],
        "label": "signer",
    }
    issuer_only = dict(key, key_id=ISSUER.key_id, roles=["issuer"])
    return [
        ("trust-root.kit", good, "ok", "valid; self-signed by its root key"),
        (
            "trust-root-bad-signature.kit",
            envelope(label, body, [[kid, bytes(64)]]),
            "UnauthenticatedError",
            "signature replaced by zeros",
        ),
        (
            "trust-root-key-id-mismatch.kit",
            signed(label, root_body(keys=[key])),
            "FormatError",
            "key_id is not derived from public_key",
        ),
        (
            "trust-root-no-root-key.kit",
            signed(label, root_body(keys=[issuer_only])),
            "UnauthenticatedError",
            "its only key lacks the root role, so nothing can sign it",
        ),
        (
            "trust-root-unknown-field.kit",
            signed(label, root_body(threshold=1)),
            "FormatError",
            "unknown top-level field 'threshold'",
        ),
    ]


def enrollment_vectors(root: bytes) -> list[tuple[str, bytes, str, str]]:
    e = Enrollment(
        host="build-01",
        env="prod",
        hpke_public=HOST_HPKE.public_key,
        receipt_public=HOST_RECEIPT.public_key,
        trust_root=hashlib.sha256(root).digest(),
        created_at=NOW - 29 * DAY,
    )
    good = make_enrollment(e, HOST_RECEIPT)
    label, body, _ = msgpack.unpackb(good)
    return [
        ("enrollment-valid.kit", good, "ok", "valid; self-signed by its receipt key"),
        (
            "enrollment-bad-signature.kit",
            signed(label, body, UNTRUSTED),
            "UnauthenticatedError",
            "signed by a key other than the one it enrolls",
        ),
    ]


# -- receipts -------------------------------------------------------------------


def receipt(seq: int, prev: bytes, key: SigningKey = HOST_RECEIPT, **kw: Any) -> bytes:
    fields: dict[str, Any] = {
        "host": "build-01",
        "time": NOW + 10 * seq,
        "action": "run",
        "bundle_id": "0123456789abcdef0123456789abcdef",
        "bundle_digest": bytes(32),
        "task": TASK,
        "command": tuple(COMMAND),
        "reason": "",
        "detail": "",
        "use": 0,
        "exit_status": 0,
        "duration_ms": 0,
    }
    fields.update(kw)
    return rfmt.sign_receipt(rfmt.Receipt(seq=seq, prev=prev, **fields), key)


def batch(receipts: list[bytes], seq: int, head: bytes, first: int = 1) -> bytes:
    cp = rfmt.sign_checkpoint("build-01", first, seq, head, NOW + 600, HOST_RECEIPT)
    return rfmt.encode_batch(receipts, cp)


def receipt_vectors(
    valid_bundle: bytes, unauthenticated: bytes
) -> list[tuple[str, bytes, str, list[str], str]]:
    """(file, bytes, expect, exact anomaly codes, what it shows)."""
    h = rfmt.receipt_hash
    digest = hashlib.sha256(valid_bundle).digest()
    r1 = receipt(
        1,
        rfmt.GENESIS,
        event="deny",
        action="verify",
        bundle_id="",
        bundle_digest=hashlib.sha256(unauthenticated).digest(),
        reason="unauthenticated",
        detail="bundle is not validly signed by a trusted key",
    )
    r2 = receipt(2, h(r1), event="release", bundle_digest=digest, use=1)
    r3 = receipt(3, h(r2), event="exit", bundle_digest=digest, duration_ms=1234)
    r2_fork = receipt(2, h(r1), event="release", bundle_digest=digest, use=2)
    r2_forged = receipt(
        2, h(r1), UNTRUSTED, event="release", bundle_digest=digest, use=1
    )
    return [
        (
            "receipts-valid.kit",
            batch([r1, r2, r3], 3, h(r3)),
            "ok",
            [],
            "deny, release, exit; checkpoint at seq 3",
        ),
        (
            "receipts-gap.kit",
            batch([r1, r3], 3, h(r3)),
            "batch-incomplete",
            ["batch-incomplete", "chain-gap"],
            "receipt 2 deleted",
        ),
        (
            "receipts-truncated.kit",
            batch([r1, r2], 3, h(r3)),
            "batch-incomplete",
            ["batch-incomplete", "checkpoint-mismatch"],
            "receipt 3 cut off; the checkpoint still names it",
        ),
        (
            "receipts-fork.kit",
            batch([r1, r2_fork], 2, h(r2_fork)),
            "chain-fork",
            ["chain-fork", "checkpoint-mismatch"],
            "a second, different receipt 2; reconciled after receipts-valid.kit",
        ),
        (
            "receipts-forged.kit",
            batch([r1, r2_forged, r3], 3, h(r3)),
            "bad-signature",
            ["bad-signature", "batch-incomplete", "chain-gap"],
            "receipt 2 signed by another key",
        ),
        (
            "receipts-trailing-byte.kit",
            batch([r1, r2, r3], 3, h(r3)) + b"\xc0",
            "malformed-batch",
            ["malformed-batch"],
            "one byte appended to the batch",
        ),
    ]


# -- sealed key at rest and SHA256SUMS --------------------------------------------


def sealed_key(
    secret: bytes,
    passphrase: str,
    label: str,
    kdf: str = "argon2id",
    ops: int = argon2id.OPSLIMIT_INTERACTIVE,
) -> bytes:
    mem = argon2id.MEMLIMIT_INTERACTIVE
    salt = seed("salt/" + label)[: argon2id.SALTBYTES]
    nonce = seed("nonce/" + label)[: nacl.secret.SecretBox.NONCE_SIZE]
    k = argon2id.kdf(32, passphrase.encode(), salt, opslimit=ops, memlimit=mem)
    box = bytes(nacl.secret.SecretBox(k).encrypt(secret, nonce))
    return encoding.encode(
        {
            "label": "kit/sealed-key/v1",
            "kdf": kdf,
            "ops": ops,
            "mem": mem,
            "salt": salt,
            "box": box,
        }
    )


def sums(lines: list[str], end: str = "\n") -> bytes:
    return "".join(line + end for line in lines).encode("ascii")


def manifest_vectors(files: dict[str, bytes]) -> list[tuple[str, bytes, str, str]]:
    def line(name: str) -> str:
        return f"{hashlib.sha256(files[name]).hexdigest()}  {name}"

    a, b = line("bundle-valid.kit"), line("trust-root.kit")
    return [
        ("sha256sums-valid.txt", sums([a, b]), "ok", "two entries, sorted"),
        (
            "sha256sums-unsorted.txt",
            sums([b, a]),
            "FormatError",
            "entries out of order: one manifest has one encoding",
        ),
        (
            "sha256sums-crlf.txt",
            sums([a, b], "\r\n"),
            "FormatError",
            "CRLF line ends: only LF is allowed",
        ),
        (
            "sha256sums-no-final-newline.txt",
            sums([a, b])[:-1],
            "FormatError",
            "last newline missing (truncated?)",
        ),
        (
            "sha256sums-duplicate-name.txt",
            sums([a, a]),
            "FormatError",
            "the same name twice",
        ),
        (
            "sha256sums-path-traversal.txt",
            sums([a, b.replace("trust-root.kit", "../trust-root.kit")]),
            "FormatError",
            "a name with '/' and '..'",
        ),
        (
            "sha256sums-uppercase.txt",
            sums([a.upper()]),
            "FormatError",
            "upper-case digest and name",
        ),
        (
            "sha256sums-one-space.txt",
            sums([a.replace("  ", " ")]),
            "FormatError",
            "one space between digest and name",
        ),
    ]


# -- ledger exports (FORMAT.md 14) -------------------------------------------------


def ledger_export_vectors(bundle_valid: bytes) -> list[tuple[str, bytes, str, str]]:
    """Export 1 of the vectors' ledger: host build-01 and bundle-valid.kit."""
    claims = bfmt.parse_bundle(bundle_valid).claims_bytes
    c = claims_map()
    issuance = {
        k: c[k]
        for k in (
            "bundle_id", "host", "env", "task", "identity", "owner", "issuer",
            "issued_at", "not_before", "expires_at", "max_uses",
        )
    } | {
        "lseq": 1,
        "claims_digest": hashlib.sha256(claims).digest(),
        "bundle_digest": hashlib.sha256(bundle_valid).digest(),
    }  # fmt: skip
    host = {
        "name": "build-01",
        "env": "prod",
        "receipt_key": HOST_RECEIPT.public_key,
        "hpke_key_id": key_id(HOST_HPKE.public_key),
        "enrolled_at": NOW - DAY,
    }

    def body(**changes: Any) -> bytes:
        b: dict[str, Any] = {
            "signer": "vectors",
            "seq": 1,
            "prev": bytes(32),
            "time": NOW,
            "first_lseq": 1,
            "last_lseq": 1,
            "hosts": [host],
            "issuances": [issuance],
            "revocations": [{"kind": "env", "value": "staging", "added_at": NOW}],
        }
        return encoding.encode(b | changes)

    label = "kit/ledger-export/v1"
    return [
        ("ledger-export-valid.kit", signed(label, body()), "ok",
         "export 1: host build-01 and bundle-valid.kit's issuance as lseq 1"),
        ("ledger-export-untrusted-signer.kit", signed(label, body(), UNTRUSTED),
         "UnauthenticatedError", "signed by a key that is not an issuer of the root"),
        ("ledger-export-lseq-outside-range.kit",
         signed(label, body(last_lseq=0, first_lseq=1)), "FormatError",
         "the issuance's lseq 1 is outside the stated range 1..0"),
    ]  # fmt: skip


# -- putting it together ----------------------------------------------------------


def generate() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    entries: list[dict[str, Any]] = []

    def put(name: str, data: bytes, kind: str, expect: str, why: str, **extra: Any):
        assert name not in files  # noqa: S101
        files[name] = data
        entries.append(
            {"file": name, "kind": kind, "expect": expect, "now": NOW, "note": why}
            | extra
        )

    put(
        "host-hpke.key",
        HOST_HPKE.raw_unsafe(),
        "x25519-private-key",
        "ok",
        "host build-01's HPKE private key (raw 32 bytes); test material only",
        public=HOST_HPKE.public_key.hex(),
        key_id=key_id(HOST_HPKE.public_key),
    )
    put(
        "host-receipt.key",
        HOST_RECEIPT.seed_unsafe(),
        "ed25519-seed",
        "ok",
        "host build-01's receipt signing seed (raw 32 bytes); test material only",
        public=HOST_RECEIPT.public_key.hex(),
        key_id=HOST_RECEIPT.key_id,
    )
    for name, data, expect, why in root_vectors():
        put(name, data, "trust-root", expect, why)
    for name, data, expect, why in enrollment_vectors(files["trust-root.kit"]):
        put(name, data, "enrollment", expect, why)
    for name, data, expect, why, extra in bundle_vectors():
        if expect == "ok":
            extra = {"secret": SECRET.decode(), **extra}
        put(name, data, "bundle", expect, why, **extra)
    for name, data, expect, codes, why in receipt_vectors(
        files["bundle-valid.kit"], files["bundle-untrusted-signer.kit"]
    ):
        extra = {"with": ["receipts-valid.kit"]} if "fork" in name else {}
        put(name, data, "receipt-batch", expect, why, anomalies=codes, **extra)
    put(
        "sealed-key.bin",
        sealed_key(ISSUER.seed_unsafe(), PASSPHRASE, "sealed-key"),
        "sealed-key",
        "ok",
        "the issuer seed sealed under the manifest's passphrase",
        opens_to=ISSUER.seed_unsafe().hex(),
    )
    put(
        "sealed-key-other-passphrase.bin",
        sealed_key(ISSUER.seed_unsafe(), "not the passphrase", "other-passphrase"),
        "sealed-key",
        "HomeError",
        "sealed under a different passphrase",
    )
    put(
        "sealed-key-unknown-kdf.bin",
        sealed_key(ISSUER.seed_unsafe(), PASSPHRASE, "unknown-kdf", kdf="scrypt"),
        "sealed-key",
        "FormatError",
        "kdf 'scrypt' is not allowed",
    )
    put(
        "sealed-key-excessive-cost.bin",
        sealed_key(ISSUER.seed_unsafe(), PASSPHRASE, "excessive-cost", ops=5),
        "sealed-key",
        "FormatError",
        "Argon2id ops 5, above the 'sensitive' profile's 4",
    )
    for name, data, expect, why in manifest_vectors(files):
        put(name, data, "sha256sums", expect, why)
    for name, data, expect, why in ledger_export_vectors(files["bundle-valid.kit"]):
        put(name, data, "ledger-export", expect, why)

    manifest = {
        "about": "kit format test vectors (docs/FORMAT.md); regenerate with "
        "scripts/make_vectors.py. Private keys here are test material only.",
        "now": NOW,
        "leeway": 30,
        "risk_levels": RISK_LEVELS,
        "floor": NOW - DAY,
        "host": {"name": "build-01", "env": "prod", "hpke_key": "host-hpke.key"},
        "trust_root": "trust-root.kit",
        "task": TASK,
        "command": COMMAND,
        "datasets": DATASETS,
        "delivery": DELIVERY,
        "passphrase": PASSPHRASE,
        "vectors": entries,
    }
    files["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    files = generate()
    present = {p.name for p in args.out.iterdir()} if args.out.is_dir() else set()
    if args.check:
        stale = sorted(
            n
            for n in files
            if n not in present or (args.out / n).read_bytes() != files[n]
        )
        extra = sorted(present - set(files) - HAND_WRITTEN)
        for n in stale:
            print(f"differs or missing: {n}", file=sys.stderr)
        for n in extra:
            print(f"not generated: {n}", file=sys.stderr)
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n in sorted(present - set(files) - HAND_WRITTEN):
        (args.out / n).unlink()
    for n, data in files.items():
        (args.out / n).write_bytes(data)
    print(f"wrote {len(files)} files to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
