"""The fast paths decide speed only: each of the host's fast readers is
compared with the precise reader it stands in front of, on valid input, on
every refused input the other tests know, and on generated variations of
both; the faster issuing path keeps each issuance durable and its ledger
digest unchanged."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from typing import Any

import pytest
from conftest import World
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st
from test_encoding import REFUSED

from kit import encoding
from kit.crypto.seal import OVERHEAD
from kit.errors import FormatError
from kit.formats import bundle as bundle_fmt
from kit.signer.signer import DIGEST_INFO

CAP = 1 << 20


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args, **kwargs)
    except FormatError as exc:
        return "refused", str(exc)


def _same_decode(data: bytes) -> None:
    fast = _outcome(encoding.decode, data, cap=CAP, what="thing")
    precise = _outcome(encoding._decode_precise, data, cap=CAP, what="thing")
    assert fast == precise


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_decode_refuses_what_the_precise_decoder_does(name: str) -> None:
    _same_decode(REFUSED[name])


# Scalars, arrays and maps of every msgpack type kit might meet, floats and
# duplicate-prone keys included; encoded both canonically and as given.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.binary(max_size=6)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "b", "z", "é", "ab"]), inner, max_size=4
        )
    ),
    max_leaves=20,
)


@given(VALUES)
@settings(max_examples=300, deadline=None)
def test_decode_agrees_with_the_precise_decoder(value: Any) -> None:
    import msgpack

    _same_decode(msgpack.packb(value, use_bin_type=True))  # dict order as given
    try:
        canonical = encoding.encode(value)
    except (TypeError, ValueError):
        return
    _same_decode(canonical)


@given(st.binary(max_size=40))
@settings(max_examples=300, deadline=None)
def test_decode_agrees_on_arbitrary_bytes(data: bytes) -> None:
    _same_decode(data)


def test_depth_edge_agrees() -> None:
    for depth in range(encoding.MAX_DEPTH - 1, encoding.MAX_DEPTH + 3):
        for inner in (b"\x01", b"\x90", b"\x80", b"\x91\x01"):
            _same_decode(b"\x91" * depth + inner)
            _same_decode(b"\x81\xa1a" * depth + inner)


# -- claims ---------------------------------------------------------------------

GOOD: dict[str, Any] = {
    "bundle_id": "0" * 32,
    "issuer": "1" * 32,
    "owner": "ops@example.org",
    "host": "build-01",
    "host_key": "2" * 32,
    "env": "prod",
    "task": "nightly",
    "commands": [["true"], ["python3", "job.py"]],
    "secret_name": "KIT_SECRET",
    "issued_at": 1_800_000_000,
    "not_before": 1_800_000_000,
    "expires_at": 1_800_003_600,
    "max_uses": 1,
    "identity": "",
    "declaration": b"",
    "datasets": [],
    "risk": "low",
    "delivery": ["env", "fd"],
    "approvals": 0,
    "anchor_seq": 0,
    "anchor_head": b"",
}

# Values that sit on or just past an edge of some field's rule.
ODD: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1 << 62,
    (1 << 62) + 1,
    encoding.TIME_MIN - 1,
    encoding.TIME_MIN,
    encoding.TIME_MAX - 1,
    encoding.TIME_MAX,
    1_800_000_000 + bundle_fmt.MAX_LIFETIME,
    1_800_000_001 + bundle_fmt.MAX_LIFETIME,
    bundle_fmt.MAX_USES,
    bundle_fmt.MAX_USES + 1,
    bundle_fmt.MAX_APPROVALS + 1,
    "",
    "a" * 63,
    "a" * 64,
    "x" * 257,
    "A",
    "LD_PRELOAD",
    "path",
    "Kit_Secret",
    "3" * 32,
    "high",
    "env",
    "a\x00b",
    "caf\u00e9",
    b"",
    b"\x00" * 32,
    b"\x00" * 31,
    b"\x00" * 33,
    [],
    [[]],
    [["a\x00"]],
    [["x" * 256]],
    [["x" * 257]],
    [["a"]] * 17,
    [["a"] * 33],
    ["env"],
    ["env", "env"],
    ["env", "fax"],
    ["fd", "file", "stdin", "env"],
    ["a", "b"],
    ["a", "a"],
    ["A"],
    ["a"] * 33,
    [1],
    {},
]


def _claims_outcome(obj: Any) -> tuple[str, Any]:
    fast = bundle_fmt._read_claims_fast(obj)
    precise = _outcome(bundle_fmt._read_claims_precise, obj)
    return ("ok", fast) if fast is not None else ("refused", None), precise


def _same_claims(obj: Any) -> None:
    (fast_kind, fast), (precise_kind, precise) = _claims_outcome(obj)
    assert fast_kind == precise_kind, (obj, precise)
    if fast_kind == "ok":
        assert fast == precise


def test_good_claims_take_the_fast_path() -> None:
    claims = bundle_fmt._read_claims_fast(dict(GOOD))
    assert claims is not None
    assert claims == bundle_fmt._read_claims_precise(dict(GOOD))


@pytest.mark.parametrize("field", sorted(GOOD))
def test_claims_agree_on_each_odd_value(field: str) -> None:
    for value in ODD:
        _same_claims({**GOOD, field: value})
    _same_claims({k: v for k, v in GOOD.items() if k != field})
    _same_claims({**GOOD, "zz_unknown": 1})


@given(
    st.dictionaries(
        st.sampled_from(sorted(GOOD)), st.sampled_from(range(len(ODD))), max_size=4
    )
)
@settings(max_examples=400, deadline=None)
def test_claims_agree_on_combined_changes(changes: dict[str, int]) -> None:
    _same_claims({**GOOD, **{k: ODD[i] for k, i in changes.items()}})


def test_identity_and_anchor_pairs_agree() -> None:
    for identity in ("", "deploy", "Deploy"):
        for declaration in (b"", b"\x01" * 32):
            _same_claims({**GOOD, "identity": identity, "declaration": declaration})
    for seq in (0, 1):
        for head in (b"", b"\x02" * 32):
            _same_claims({**GOOD, "anchor_seq": seq, "anchor_head": head})


# -- bundle body ----------------------------------------------------------------

SEALED_MIN = OVERHEAD + 1
SEALED_MAX = bundle_fmt.MAX_SECRET + OVERHEAD


@pytest.mark.parametrize(
    "body",
    [
        {"claims": b"c", "sealed": b"s" * SEALED_MIN},
        {"claims": b"", "sealed": b"s" * SEALED_MAX},
        {"claims": b"c" * bundle_fmt.CAP, "sealed": b"s" * SEALED_MIN},
        {"claims": b"c" * (bundle_fmt.CAP + 1), "sealed": b"s" * SEALED_MIN},
        {"claims": b"c", "sealed": b"s" * OVERHEAD},
        {"claims": b"c", "sealed": b"s" * (SEALED_MAX + 1)},
        {"claims": "c", "sealed": b"s" * SEALED_MIN},
        {"claims": b"c", "sealed": [b"s"]},
        {"claims": b"c"},
        {"claims": b"c", "sealed": b"s" * SEALED_MIN, "extra": 1},
        [b"c", b"s" * SEALED_MIN],
        None,
    ],
)
def test_body_readers_agree(body: Any) -> None:
    fast = bundle_fmt._read_body_fast(body)
    precise = _outcome(bundle_fmt._read_body_precise, body)
    assert (("ok", fast) if fast is not None else ("refused", None))[0] == precise[0]
    if fast is not None:
        assert fast == precise[1]


# -- issuing: faster, and exactly as durable -------------------------------------


def test_ledger_commits_each_issuance_durably(world: World) -> None:
    """Write-ahead log with synchronous=FULL: an issuance is on disk, visible
    to any other connection, as soon as ``Signer.issue`` returns."""
    db = world.signer.ledger._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    issued = world.issue()
    other = sqlite3.connect(world.signer_home / "ledger.db")
    try:
        rows = other.execute(
            "SELECT bundle_id FROM bundles WHERE bundle_id = ?",
            (issued.claims.bundle_id,),
        ).fetchall()
    finally:
        other.close()
    assert rows == [(issued.claims.bundle_id,)]


def test_secret_digest_key_is_derived_once_and_unchanged(world: World) -> None:
    """The ledger's keyed digest is the one it always was (HMAC under an HKDF
    key from the issuer seed), now derived once per unlocked key."""
    issued = world.issue(secret=b"the same secret")
    record = world.signer.ledger.get_bundle(issued.claims.bundle_id)
    assert record is not None
    seed = world.signer.key.seed_unsafe()
    mac_key = HKDF(hashes.SHA256(), 32, salt=None, info=DIGEST_INFO).derive(seed)
    expected = hmac.new(mac_key, b"the same secret", hashlib.sha256).digest()
    assert record.secret_digest == expected
    cached = world.signer._digest_key
    assert cached is not None and cached[0] is world.signer.key
    world.issue(secret=b"another")
    assert world.signer._digest_key is cached
