"""Ledger export (FORMAT.md 14): what the signer issued, for an auditor who
holds no secret key and cannot reach the signer.

One export is an envelope labelled ``kit/ledger-export/v1`` signed by an
issuer key of the trust root. Exports are numbered from 1 and each names the
SHA-256 of the previous one's envelope bytes, so a removed export shows; the
issuances inside carry the ledger's own increasing sequence numbers, and each
export states the range it covers, so a removed issuance shows too. Claims
and digests only: never the secret, its keyed digest or the sealed box.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from kit import encoding
from kit.crypto.sign import SigningKey
from kit.errors import FormatError
from kit.formats import revocation
from kit.formats.envelope import (
    Envelope,
    parse_envelope_uniform,
    seal_envelope,
    verify_envelope,
)

LABEL = "kit/ledger-export/v1"
CAP = 48 * 1024 * 1024
MAX_ITEMS = 50_000  # issuances per export; hosts and revocations likewise
GENESIS = bytes(32)
MAX_SEQ = 1 << 62
REVOCATION_KINDS = revocation.KINDS


@dataclass(frozen=True)
class ExportedHost:
    name: str
    env: str
    receipt_key: bytes  # Ed25519 public key the host signs receipts with
    hpke_key_id: str
    enrolled_at: int

    def to_map(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "env": self.env,
            "receipt_key": self.receipt_key,
            "hpke_key_id": self.hpke_key_id,
            "enrolled_at": self.enrolled_at,
        }


@dataclass(frozen=True)
class ExportedIssuance:
    lseq: int  # the ledger's sequence number for this issuance
    bundle_id: str
    host: str
    env: str
    task: str
    identity: str
    owner: str
    issuer: str
    issued_at: int
    not_before: int
    expires_at: int
    max_uses: int
    claims_digest: bytes  # SHA-256 of the signed claims bytes
    bundle_digest: bytes  # SHA-256 of the bundle envelope as issued

    def to_map(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class ExportedRevocation:
    kind: str
    value: str
    added_at: int

    def to_map(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class LedgerExport:
    signer: str  # the trust root's name
    seq: int
    prev: bytes
    time: int
    first_lseq: int  # issuances first_lseq..last_lseq are in this export
    last_lseq: int
    hosts: tuple[ExportedHost, ...]
    issuances: tuple[ExportedIssuance, ...]
    revocations: tuple[ExportedRevocation, ...]
    envelope: Envelope | None = None

    def body(self) -> bytes:
        return encoding.encode(
            {
                "signer": self.signer,
                "seq": self.seq,
                "prev": self.prev,
                "time": self.time,
                "first_lseq": self.first_lseq,
                "last_lseq": self.last_lseq,
                "hosts": [h.to_map() for h in self.hosts],
                "issuances": [i.to_map() for i in self.issuances],
                "revocations": [r.to_map() for r in self.revocations],
            }
        )

    @property
    def digest(self) -> bytes:
        if self.envelope is None:
            raise FormatError("ledger export: not signed yet")
        return self.envelope.digest


def sign_export(export: LedgerExport, key: SigningKey) -> bytes:
    for what, items in (
        ("hosts", export.hosts),
        ("issuances", export.issuances),
        ("revocations", export.revocations),
    ):
        if len(items) > MAX_ITEMS:
            raise FormatError(f"ledger export: more than {MAX_ITEMS} {what}")
    return seal_envelope(LABEL, export.body(), [key])


def open_export(
    data: bytes, issuers: Mapping[str, bytes], threshold: int
) -> LedgerExport:
    """Authenticate an export against the trust root's issuer keys, then
    decode it. Before the signature: one uniform FormatError; a signature
    short of ``threshold``: UnauthenticatedError; after it, errors name the
    field."""
    env = parse_envelope_uniform(data, label=LABEL, cap=CAP, what="ledger export")
    verify_envelope(env, issuers, threshold=threshold, what="ledger export")
    return decode_export(env)


def unpack_authenticated(data: bytes, cap: int, what: str) -> Any:
    """Strict msgpack decoding for bytes whose signature (or hash link) has
    already been checked, at C speed: extension types are refused while
    decoding, and re-encoding must give the same bytes, which refuses
    non-minimal forms and duplicate map keys (the duplicate is dropped, so
    the bytes differ). The caller checks that each map's keys are in
    canonical order (:func:`in_order`); floats and deep nesting are left to
    the typed field checks that follow, which accept neither."""
    if len(data) > cap:
        raise FormatError(f"{what} is {len(data)} bytes, over the {cap}-byte cap")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            ext_hook=encoding._refuse_ext,
        )
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        raise FormatError(f"{what} is truncated or not valid msgpack") from None
    except msgpack.StackError:
        raise FormatError(f"{what} nests too deeply") from None
    if msgpack.packb(obj, use_bin_type=True) != data:
        raise FormatError(f"{what} is not canonically encoded")
    return obj


def in_order(obj: Any) -> bool:
    """A map's keys are in canonical order (FORMAT.md 2)."""
    keys = list(obj) if isinstance(obj, dict) else []
    return all(isinstance(k, str) for k in keys) and keys == sorted(
        keys, key=lambda k: k.encode()
    )


def _ordered(obj: Any, what: str) -> Any:
    if isinstance(obj, dict) and not in_order(obj):
        raise FormatError(f"{what}: map keys are not in canonical order")
    return obj


def decode_export(env: Envelope) -> LedgerExport:
    body = _ordered(
        unpack_authenticated(env.body, CAP, "ledger export body"), "ledger export body"
    )
    for name in ("hosts", "revocations"):
        items = body.get(name) if isinstance(body, dict) else None
        for item in items if isinstance(items, list) else []:
            _ordered(item, f"ledger export {name}")
    f = encoding.Fields(body, "ledger export")
    out = LedgerExport(
        signer=f.text("signer", encoding.NAME_RE),
        seq=f.integer("seq", 1, MAX_SEQ),
        prev=f.binary("prev", 32),
        time=f.time("time"),
        first_lseq=f.integer("first_lseq", 1, MAX_SEQ),
        last_lseq=f.integer("last_lseq", 0, MAX_SEQ),
        hosts=tuple(_host(h) for h in f.array("hosts", MAX_ITEMS)),
        issuances=tuple(_issuance(i) for i in f.array("issuances", MAX_ITEMS)),
        revocations=tuple(_revocation(r) for r in f.array("revocations", MAX_ITEMS)),
        envelope=env,
    )
    f.done()
    if out.last_lseq < out.first_lseq - 1:
        raise FormatError("ledger export: last_lseq is before first_lseq - 1")
    previous = out.first_lseq - 1
    for item in out.issuances:
        # Strictly increasing inside the stated range; a hole is the
        # auditor's finding (a removed issuance), not a format error.
        if not previous < item.lseq <= out.last_lseq:
            raise FormatError(
                f"ledger export: issuance lseq {item.lseq} is out of order or "
                f"outside {out.first_lseq}..{out.last_lseq}"
            )
        previous = item.lseq
    return out


def _host(obj: Any) -> ExportedHost:
    f = encoding.Fields(obj, "ledger export host")
    h = ExportedHost(
        name=f.text("name", encoding.NAME_RE),
        env=f.text("env", encoding.NAME_RE),
        receipt_key=f.binary("receipt_key", 32),
        hpke_key_id=f.text("hpke_key_id", encoding.HEX32_RE),
        enrolled_at=f.time("enrolled_at"),
    )
    f.done()
    return h


_ISSUANCE_FIELDS = frozenset(ExportedIssuance.__dataclass_fields__)
_ISSUANCE_ORDER = sorted(_ISSUANCE_FIELDS, key=lambda k: k.encode())
_ISSUANCE_TEXT = {
    "bundle_id": encoding.HEX32_RE,
    "host": encoding.NAME_RE,
    "env": encoding.NAME_RE,
    "task": encoding.NAME_RE,
    "owner": encoding.OWNER_RE,
    "issuer": encoding.HEX32_RE,
}
_ISSUANCE_INT = {
    "lseq": (1, MAX_SEQ),
    "issued_at": (encoding.TIME_MIN, encoding.TIME_MAX - 1),
    "not_before": (encoding.TIME_MIN, encoding.TIME_MAX - 1),
    "expires_at": (encoding.TIME_MIN, encoding.TIME_MAX - 1),
    "max_uses": (1, 1000),
}


def _issuance(obj: Any) -> ExportedIssuance:
    """One issuance. The common case is checked inline (there may be a
    million); anything off goes through the field reader for its message."""
    if type(obj) is dict and list(obj) == _ISSUANCE_ORDER and _issuance_ok(obj):
        # Every field present and checked: copied in at once rather than
        # through the frozen dataclass's __init__, a call per field.
        issued: ExportedIssuance = object.__new__(ExportedIssuance)
        issued.__dict__.update(obj)
        return issued
    return _issuance_checked(obj)


def _issuance_ok(obj: dict[str, Any]) -> bool:
    for k, rx in _ISSUANCE_TEXT.items():
        v = obj[k]
        if type(v) is not str or not rx.fullmatch(v):
            return False
    for k, (lo, hi) in _ISSUANCE_INT.items():
        v = obj[k]
        if type(v) is not int or not lo <= v <= hi:
            return False
    identity, claims, digest = (
        obj["identity"],
        obj["claims_digest"],
        obj["bundle_digest"],
    )
    return (
        type(identity) is str
        and (identity == "" or encoding.NAME_RE.fullmatch(identity) is not None)
        and type(claims) is bytes
        and len(claims) == 32
        and type(digest) is bytes
        and len(digest) == 32
        and obj["expires_at"] > obj["not_before"]
    )


def _issuance_checked(obj: Any) -> ExportedIssuance:
    f = encoding.Fields(
        _ordered(obj, "ledger export issuance"), "ledger export issuance"
    )
    identity = f.text("identity", max_len=63)
    if identity:
        encoding.check_text(identity, "issuance identity", encoding.NAME_RE)
    i = ExportedIssuance(
        lseq=f.integer("lseq", 1, MAX_SEQ),
        bundle_id=f.text("bundle_id", encoding.HEX32_RE),
        host=f.text("host", encoding.NAME_RE),
        env=f.text("env", encoding.NAME_RE),
        task=f.text("task", encoding.NAME_RE),
        identity=identity,
        owner=f.text("owner", encoding.OWNER_RE),
        issuer=f.text("issuer", encoding.HEX32_RE),
        issued_at=f.time("issued_at"),
        not_before=f.time("not_before"),
        expires_at=f.time("expires_at"),
        max_uses=f.integer("max_uses", 1, 1000),
        claims_digest=f.binary("claims_digest", 32),
        bundle_digest=f.binary("bundle_digest", 32),
    )
    f.done()
    if i.expires_at <= i.not_before:
        raise FormatError(f"ledger export issuance {i.bundle_id}: expires_at first")
    return i


def _revocation(obj: Any) -> ExportedRevocation:
    f = encoding.Fields(obj, "ledger export revocation")
    r = ExportedRevocation(
        kind=f.choice("kind", REVOCATION_KINDS),
        value=f.text("value", max_len=64),
        added_at=f.time("added_at"),
    )
    f.done()
    revocation.check_entry(r.kind, r.value)
    return r
