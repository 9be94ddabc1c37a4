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
    "a\nb",
    "ops\n",
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


def _precise_claims(raw: bytes) -> Any:
    obj = encoding._decode_precise(raw, cap=bundle_fmt.CAP, what="bundle claims")
    return bundle_fmt._read_claims_precise(obj)


def _same_claims_bytes(raw: bytes) -> None:
    """The fast reader accepts exactly the bytes the strict decoder and the
    precise reader accept, with equal claims, and decode_claims refuses the
    rest with the precise reader's message."""
    fast = bundle_fmt._claims_fast(raw)
    precise = _outcome(_precise_claims, raw)
    assert ("ok" if fast is not None else "refused") == precise[0], precise
    if fast is not None:
        assert fast == precise[1]
        assert type(fast) is type(precise[1]) is bundle_fmt.Claims
        # every field, same types
        assert fast._asdict() == precise[1]._asdict()
        assert [type(v) for v in fast] == [type(v) for v in precise[1]]
    assert _outcome(bundle_fmt.decode_claims, raw) == precise


def _same_claims(obj: Any) -> None:
    import msgpack

    try:
        canonical = encoding.encode(obj)
    except (TypeError, ValueError):
        canonical = None
    if canonical is not None:
        _same_claims_bytes(canonical)
    as_given = msgpack.packb(obj, use_bin_type=True)  # dict order as written
    _same_claims_bytes(as_given)


def test_good_claims_take_the_fast_path() -> None:
    raw = encoding.encode(GOOD)
    claims = bundle_fmt._claims_fast(raw)
    assert claims is not None
    assert claims == _precise_claims(raw)
    assert type(claims) is bundle_fmt.Claims
    assert set(claims._fields) == set(GOOD)

    def arrays_as_tuples(v: Any) -> Any:
        return tuple(map(arrays_as_tuples, v)) if isinstance(v, list) else v

    for name, value in GOOD.items():  # each value under its own field
        assert getattr(claims, name) == arrays_as_tuples(value), name
    assert isinstance(claims.commands[0], tuple)
    assert bundle_fmt._claims_fast(msgpack_unsorted(GOOD)) is None


def msgpack_unsorted(obj: dict[str, Any]) -> bytes:
    import msgpack

    reordered = dict(reversed(list(obj.items())))
    return msgpack.packb(reordered, use_bin_type=True)


@pytest.mark.parametrize("field", sorted(GOOD))
def test_claims_agree_on_each_odd_value(field: str) -> None:
    for value in ODD:
        _same_claims({**GOOD, field: value})
    _same_claims({k: v for k, v in GOOD.items() if k != field})
    _same_claims({**GOOD, "zz_unknown": 1})
    _same_claims({**GOOD, field: 1.5})  # a float anywhere
    _same_claims({**GOOD, field: [GOOD[field]]})  # one level deeper


@given(
    st.dictionaries(
        st.sampled_from(sorted(GOOD)), st.sampled_from(range(len(ODD))), max_size=4
    )
)
@settings(max_examples=400, deadline=None)
def test_claims_agree_on_combined_changes(changes: dict[str, int]) -> None:
    _same_claims({**GOOD, **{k: ODD[i] for k, i in changes.items()}})


def _widened(raw: bytes) -> list[bytes]:
    """The same claims with one header or integer in a wider form than
    needed, at every position where msgpack allows one: each decodes to the
    same value, and each is refused as not canonical."""
    out = []
    for i, b in enumerate(raw):
        if 0xA0 <= b <= 0xBF:  # fixstr -> str8
            out.append(raw[:i] + bytes([0xD9, b - 0xA0]) + raw[i + 1 :])
        elif b <= 0x7F:  # positive fixint -> uint8 (may also hit a text byte)
            out.append(raw[:i] + bytes([0xCC, b]) + raw[i + 1 :])
        elif 0x90 <= b <= 0x9F:  # fixarray -> array16
            out.append(raw[:i] + bytes([0xDC, 0, b - 0x90]) + raw[i + 1 :])
    return out


def test_claims_in_a_wider_form_agree() -> None:
    for raw in _widened(encoding.encode(GOOD)):
        _same_claims_bytes(raw)


@given(st.binary(max_size=12), st.integers(0, 400))
@settings(max_examples=300, deadline=None)
def test_claims_agree_on_damaged_bytes(junk: bytes, at: int) -> None:
    raw = encoding.encode(GOOD)
    at %= len(raw)
    _same_claims_bytes(raw[:at] + junk + raw[at + len(junk) :])
    _same_claims_bytes(raw[:at] + junk + raw[at:])
    _same_claims_bytes(raw + junk)


def test_text_patterns_can_be_joined() -> None:
    """_TEXTS_RE matches the eight text fields joined by newlines, with any
    field holding a newline refused first: exact while each pattern caps its
    length at 256 characters, as Fields.text does, and complete while no
    pattern matches a newline."""
    from re import _parser  # type: ignore[attr-defined]

    for field, pattern in bundle_fmt._TEXTS:
        assert _parser.parse(pattern.pattern).getwidth()[1] <= 256, field
        valid = GOOD[field]
        assert pattern.fullmatch(valid)
        for i in range(len(valid) + 1):
            assert pattern.fullmatch(valid[:i] + "\n" + valid[i:]) is None


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


def _same_body_bytes(raw: bytes) -> None:
    fast = bundle_fmt._body_fast(raw)

    def precise() -> Any:
        obj = encoding._decode_precise(raw, cap=bundle_fmt.CAP, what="bundle body")
        return bundle_fmt._read_body_precise(obj)

    outcome = _outcome(precise)
    assert ("ok" if fast is not None else "refused") == outcome[0], outcome
    if fast is not None:
        assert fast == outcome[1]


@pytest.mark.parametrize(
    "body",
    [
        {"claims": b"c", "sealed": b"s" * SEALED_MIN},
        {"claims": b"c" * 300, "sealed": b"s" * SEALED_MAX},
        {"sealed": b"s" * SEALED_MIN, "claims": b"c"},  # out of order
        {"claims": b"c", "sealed": b"s" * OVERHEAD},
        {"claims": "c", "sealed": b"s" * SEALED_MIN},
        {"claims": b"c", "sealed": b"s" * SEALED_MIN, "extra": 1},
        {"claims": b"c", "sealed": 1.5},
        [b"c", b"s" * SEALED_MIN],
        None,
    ],
)
def test_body_bytes_agree(body: Any) -> None:
    import msgpack

    _same_body_bytes(msgpack.packb(body, use_bin_type=True))
    try:
        _same_body_bytes(encoding.encode(body))
    except (TypeError, ValueError):
        pass
    good = encoding.encode({"claims": b"c", "sealed": b"s" * SEALED_MIN})
    for raw in _widened(good):
        _same_body_bytes(raw)
    # A duplicated key: the map shrinks, the bytes do not.
    dup = b"\x83" + good[1:] + b"\xa6sealed\xc4\x01s"
    _same_body_bytes(dup)


# -- envelope -------------------------------------------------------------------

KID = "ab" * 16
SIG = b"\x07" * 64
# Parts of an envelope, each on or past an edge of the envelope's rules.
LABELS = ["kit/bundle/v1", "kit/bundle/v2", b"kit/bundle/v1", 1]
BODIES = [b"body", b"", "body", None, [b"body"]]
SIG_ITEMS = [
    [KID, SIG],
    [KID, SIG[:63]],
    [KID, SIG + b"\x00"],
    [KID.upper(), SIG],
    [KID[:31], SIG],
    [KID + "\n", SIG],
    [b"ab" * 16, SIG],
    [KID, SIG, 1],
    [KID],
    {"kid": KID},
    [KID, 1.5],
]


def _same_envelope_bytes(raw: bytes) -> None:
    from kit.formats import envelope as env_fmt

    args = {"label": "kit/bundle/v1", "cap": 4096, "what": "thing"}
    fast = env_fmt._parse_fast(raw, "kit/bundle/v1", 4096)
    precise = _outcome(env_fmt._parse_precise, raw, **args)
    assert ("ok" if fast is not None else "refused") == precise[0], precise
    if fast is not None:
        assert fast == precise[1]
    assert _outcome(env_fmt.parse_envelope, raw, **args) == precise


@given(
    st.sampled_from(LABELS),
    st.sampled_from(BODIES),
    st.lists(st.sampled_from(SIG_ITEMS), max_size=10),
)
@settings(max_examples=400, deadline=None)
def test_envelope_readers_agree(label: Any, body: Any, sigs: list[Any]) -> None:
    import msgpack

    for obj in ([label, body, sigs], [label, body], [label, body, sigs, 0]):
        _same_envelope_bytes(msgpack.packb(obj, use_bin_type=True))


def test_envelope_edges_agree() -> None:
    import msgpack

    good = msgpack.packb(["kit/bundle/v1", b"body", [[KID, SIG]]])
    _same_envelope_bytes(good)
    assert bundle_fmt.parse_envelope(
        good, label="kit/bundle/v1", cap=4096, what="x"
    ).signatures == ((KID, SIG),)
    for raw in _widened(good):
        _same_envelope_bytes(raw)
    _same_envelope_bytes(good + b"\x00")  # trailing byte
    _same_envelope_bytes(good[:-1])  # truncated
    _same_envelope_bytes(msgpack.packb(["kit/bundle/v1", b"b" * 4096, [[KID, SIG]]]))
    eight = msgpack.packb(["kit/bundle/v1", b"body", [[KID, SIG]] * 8])
    nine = msgpack.packb(["kit/bundle/v1", b"body", [[KID, SIG]] * 9])
    _same_envelope_bytes(eight)
    _same_envelope_bytes(nine)
    _same_envelope_bytes(msgpack.packb(["kit/bundle/v1", b"body", []]))


def test_x25519_public_key_is_made_once_per_host() -> None:
    from kit.crypto import seal as seal_mod

    key = seal_mod.SealingKey.generate()
    seal_mod._public_key.cache_clear()
    one = seal_mod.seal(b"secret", key.public_key, b"info")
    two = seal_mod.seal(b"secret", key.public_key, b"info")
    assert seal_mod._public_key.cache_info().hits == 1
    assert one != two  # a fresh encapsulation each time
    assert key.open(one, b"info") == key.open(two, b"info") == b"secret"
    with pytest.raises(FormatError, match="not a usable X25519 key"):
        seal_mod.seal(b"secret", b"\x01" * 31, b"info")


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
