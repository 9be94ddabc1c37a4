"""Every decoder kit applies to untrusted bytes, with valid seed inputs.

Shared by the coverage-guided harness (``fuzz/run.py``, ``make fuzz``) and the
short smoke that ``make test`` runs (``tests/test_fuzz_smoke.py``). A target
may raise only kit's own errors; anything else is a finding.
"""

from __future__ import annotations

from collections.abc import Callable

from kit import qr
from kit.crypto.seal import SealingKey, seal
from kit.crypto.sign import SigningKey, key_id
from kit.encoding import encode
from kit.errors import FormatError
from kit.formats import (
    bundle,
    enrollment,
    ledger_export,
    manifest,
    receipt,
    revocation,
    trustroot,
)
from kit.formats.envelope import seal_envelope, verify_envelope
from kit.host.verifier import authenticate

NOW = 1_800_000_000
ISSUER = SigningKey(bytes(range(32)))
HOST_HPKE = SealingKey(bytes(range(32, 64)))
HOST_RECEIPTS = SigningKey(bytes(range(64, 96)))
ROOT = trustroot.load_trust_root(
    trustroot.make_trust_root(
        "fuzz", ISSUER, version=1, created_at=NOW, expires_at=NOW + 86400
    )
)


def _bundle() -> bytes:
    claims = bundle.Claims(
        bundle_id="0" * 32,
        issuer=ISSUER.key_id,
        owner="ops",
        host="h1",
        host_key="1" * 32,
        env="prod",
        task="job",
        commands=(("sh", "-c"),),
        secret_name="KIT_SECRET",  # noqa: S106 - a variable name
        issued_at=NOW,
        not_before=NOW,
        expires_at=NOW + 60,
        max_uses=1,
    )
    cb = encode(claims.to_map())
    sealed = seal(b"fuzz-secret", HOST_HPKE.public_key, bundle.seal_info_for(cb))
    return seal_envelope(bundle.LABEL, bundle.encode_body(cb, sealed), [ISSUER])


def _receipt(seq: int, prev: bytes) -> bytes:
    return receipt.sign_receipt(
        receipt.Receipt(
            host="h1",
            seq=seq,
            prev=prev,
            time=NOW,
            event="deny",
            action="run",
            bundle_id="",
            bundle_digest=bytes(32),
            task="job",
            command=("sh",),
            reason="malformed",
            detail="x",
            use=0,
            exit_status=0,
            duration_ms=0,
        ),
        HOST_RECEIPTS,
    )


def _batch() -> bytes:
    first = _receipt(1, receipt.GENESIS)
    second = _receipt(2, receipt.receipt_hash(first))
    cp = receipt.sign_checkpoint(
        "h1", 1, 2, receipt.receipt_hash(second), NOW, HOST_RECEIPTS
    )
    return receipt.encode_batch([first, second], cp)


def _enrollment() -> bytes:
    return enrollment.make_enrollment(
        enrollment.Enrollment(
            "h1",
            "prod",
            HOST_HPKE.public_key,
            HOST_RECEIPTS.public_key,
            ROOT.digest,
            NOW,
        ),
        HOST_RECEIPTS,
    )


def _open_bundle(data: bytes) -> None:
    authenticate(data, ROOT)


_RECEIPT_KEYS = {HOST_RECEIPTS.key_id: HOST_RECEIPTS.public_key}


def _check_receipt(data: bytes) -> None:
    r = receipt.parse_receipt(data)
    verify_envelope(r.envelope, _RECEIPT_KEYS, threshold=1, what="receipt")


def _check_batch(data: bytes) -> None:
    receipts, cp = receipt.parse_batch(data)
    for r in receipts:
        verify_envelope(r.envelope, _RECEIPT_KEYS, threshold=1, what="receipt")
    verify_envelope(cp.envelope, _RECEIPT_KEYS, threshold=1, what="checkpoint")


_ISSUERS = {ISSUER.key_id: ISSUER.public_key}


def _revocation_list() -> bytes:
    return revocation.sign_list(
        "fuzz",
        3,
        NOW,
        NOW + 3600,
        [revocation.Entry("bundle", "0" * 32), revocation.Entry("env", "dev")],
        ISSUER,
    )


def _load_list(data: bytes) -> None:
    revocation.load_list(data, _ISSUERS, 1)


def _ledger_export() -> bytes:
    host = ledger_export.ExportedHost(
        "h1", "prod", HOST_RECEIPTS.public_key, key_id(HOST_HPKE.public_key), NOW
    )
    export = ledger_export.LedgerExport(
        "fuzz", 1, bytes(32), NOW, 1, 0, (host,), (), ()
    )
    return ledger_export.sign_export(export, ISSUER)


def _open_export(data: bytes) -> None:
    ledger_export.open_export(data, _ISSUERS, 1)


def _qr_frames() -> bytes:
    """The frames of a receipt batch (deterministic, unlike a bundle's HPKE
    sealing), one per line, as a camera would read them."""
    return "\n".join(qr.encode_frames(_batch(), frame_bytes=200)).encode()


def _read_frames(data: bytes) -> bytes:
    """The QR frame parser and reassembler: every line is a frame as decoded
    from an image; a complete message must match its id. Only a correct,
    complete message yields an object."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("QR frame text is not UTF-8") from None
    frames = [qr.parse_frame(line) for line in text.split("\n")]
    first = frames[0]
    whole = qr.Reassembler(first.message, first.total)
    for f in frames:
        whole.add(f)
    return whole.result()


TARGETS: dict[str, tuple[Callable[[bytes], object], bytes]] = {
    "bundle": (_open_bundle, _bundle()),
    "trust-root": (trustroot.load_trust_root, ROOT.envelope.raw),
    "enrollment": (enrollment.load_enrollment, _enrollment()),
    "receipt": (_check_receipt, _receipt(1, receipt.GENESIS)),
    "receipt-batch": (_check_batch, _batch()),
    "manifest": (manifest.parse, manifest.render({"a.kit": "0" * 64})),
    "revocation-list": (_load_list, _revocation_list()),
    "ledger-export": (_open_export, _ledger_export()),
    "qr-frames": (_read_frames, _qr_frames()),
}
