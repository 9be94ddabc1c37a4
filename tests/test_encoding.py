"""kit.encoding: one encoding per value, everything else refused, quickly."""

from __future__ import annotations

import math
import struct
import time
from typing import Any

import pytest
from conftest import World
from hypothesis import given, settings
from hypothesis import strategies as st

from kit import encoding
from kit.errors import FormatError
from kit.formats import bundle as bundle_fmt
from kit.formats.envelope import seal_envelope
from kit.host.verifier import authenticate

CAP = 1 << 20
NEST = 100_000


def _u(fmt: str, *v: Any) -> bytes:
    return struct.pack(">" + fmt, *v)


REFUSED: dict[str, bytes] = {
    # maps
    "duplicate-key": b"\x82\xa1a\x01\xa1a\x02",
    "duplicate-key-same-value": b"\x82\xa1a\x01\xa1a\x01",
    "unsorted-keys": b"\x82\xa1b\x01\xa1a\x02",
    # sorted as text but not by UTF-8 bytes: "é" (c3 a9) sorts after "z" (7a)
    "keys-not-in-utf8-order": b"\x82\xa2\xc3\xa9\x01\xa1z\x02",
    "integer-key": b"\x81\x01\x01",
    "binary-key": b"\x81\xc4\x01a\x01",
    # integers, lengths and containers in a wider form than needed
    "uint8-for-fixint": b"\xcc\x01",
    "uint16-for-fixint": b"\xcd\x00\x01",
    "uint32-for-uint8": b"\xce\x00\x00\x00\xff",
    "uint64-for-fixint": b"\xcf" + _u("Q", 1),
    "int8-for-positive": b"\xd0\x01",
    "int16-for-negative-fixint": b"\xd1\xff\xff",
    "int64-for-int8": b"\xd3" + _u("q", -100),
    "str8-for-fixstr": b"\xd9\x01a",
    "str16-for-fixstr": b"\xda\x00\x01a",
    "bin16-for-bin8": b"\xc5\x00\x01a",
    "array16-for-fixarray": b"\xdc\x00\x01\x01",
    "map16-for-fixmap": b"\xde\x00\x01\xa1a\x01",
    # floats
    "float64": b"\xcb" + _u("d", 1.0),
    "float32": b"\xca" + _u("f", 1.5),
    "nan": b"\xcb" + _u("d", math.nan),
    "infinity": b"\xcb" + _u("d", math.inf),
    "float-in-map": b"\x81\xa1a\xcb" + _u("d", 0.0),
    "float-in-array": b"\x92\x01\xca" + _u("f", 2.0),
    # extension types
    "fixext1": b"\xd4\x01\x00",
    # type -1 (timestamp) is decoded by msgpack itself, never via ext_hook
    "timestamp32": b"\xd6\xff\x00\x00\x00\x00",
    "timestamp64": b"\xd7\xff" + bytes(8),
    "timestamp96": b"\xc7\x0c\xff" + bytes(12),
    "timestamp-in-array": b"\x91\xd6\xff\x00\x00\x00\x01",
    "ext8-empty": b"\xc7\x00\x05",
    "ext-in-map": b"\x81\xa1a\xd4\x01\x00",
    # framing
    "empty": b"",
    "trailing-byte": b"\x01\x02",
    "trailing-nil": b"\x90\xc0",
    "truncated-array": b"\x92\x01",
    "truncated-str": b"\xa5abc",
    "truncated-uint16": b"\xcd\x01",
    "reserved-c1": b"\xc1",
    "invalid-utf8": b"\xa1\xff",
    # length bombs: a 5-byte header claiming ~4 billion items or bytes
    "array32-bomb": b"\xdd\xff\xff\xff\xff\x01\x01",
    "map32-bomb": b"\xdf\xff\xff\xff\xff\xa1a\x01",
    "str32-bomb": b"\xdb\xff\xff\xff\xffabc",
    "bin32-bomb": b"\xc6\xff\xff\xff\xffabc",
    # nesting far past any stack
    "nested-arrays-100k": b"\x91" * NEST + b"\xc0",
    "nested-maps-100k": b"\x81\xa1a" * NEST + b"\xc0",
    "nested-mixed-100k": b"\x91\x81\xa1a" * (NEST // 2) + b"\x01",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_quickly(name: str) -> None:
    start = time.perf_counter()
    with pytest.raises(FormatError, match=r"^thing"):
        encoding.decode(REFUSED[name], cap=CAP, what="thing")
    assert time.perf_counter() - start < 1.0


def test_cap_is_checked_before_parsing() -> None:
    data = encoding.encode(b"x" * 100)
    assert encoding.decode(data, cap=len(data), what="blob") == b"x" * 100
    with pytest.raises(FormatError, match="cap"):
        encoding.decode(data, cap=len(data) - 1, what="blob")


def test_depth_limit_is_exact() -> None:
    depth = encoding.MAX_DEPTH
    ok = b"\x91" * depth + b"\x01"
    value: Any = encoding.decode(ok, cap=CAP, what="x")
    for _ in range(depth):
        value = value[0]
    assert value == 1
    with pytest.raises(FormatError, match="deeper"):
        encoding.decode(b"\x91" + ok, cap=CAP, what="x")


def test_canonical_forms_are_accepted() -> None:
    for value, data in (
        (1, b"\x01"),
        (255, b"\xcc\xff"),
        (-1, b"\xff"),
        (-33, b"\xd0\xdf"),
        ("a", b"\xa1a"),
        (b"a", b"\xc4\x01a"),
        ({"z": 2, "é": 1}, b"\x82\xa1z\x02\xa2\xc3\xa9\x01"),
        ([None, True], b"\x92\xc0\xc3"),
    ):
        assert encoding.encode(value) == data
        assert encoding.decode(data, cap=CAP, what="x") == value


# -- Fields ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False])
def test_bool_is_not_an_integer(value: bool) -> None:
    with pytest.raises(FormatError, match="integer"):
        encoding.Fields({"n": value}, "m").integer("n", 0, 10)
    with pytest.raises(FormatError):
        encoding.Fields({"t": value}, "m").time("t")
    assert encoding.Fields({"n": int(value)}, "m").integer("n", 0, 10) == int(value)


def test_integer_range_is_checked() -> None:
    f = encoding.Fields({"a": 11, "b": -1}, "m")
    with pytest.raises(FormatError):
        f.integer("a", 0, 10)
    with pytest.raises(FormatError):
        f.integer("b", 0, 10)


def test_unknown_and_missing_fields_are_refused() -> None:
    f = encoding.Fields({"known": 1, "zz-extra": 2}, "claims")
    assert f.integer("known", 0, 5) == 1
    with pytest.raises(FormatError, match=r"unknown field.*zz-extra"):
        f.done()
    with pytest.raises(FormatError, match="lacks field 'absent'"):
        encoding.Fields({}, "claims").text("absent")
    with pytest.raises(FormatError, match="must be a map"):
        encoding.Fields([1], "claims")


def test_unknown_claim_in_a_genuinely_signed_bundle_is_refused(world: World) -> None:
    """An extra claim the host does not understand (say, a looser scope) is
    refused after the signature checks out, never ignored."""
    i = world.issue()
    claims = i.claims.to_map() | {"zz-scope": "everything"}
    claims_bytes = encoding.encode(claims)
    sealed = bundle_fmt.parse_bundle(i.data).sealed
    data = seal_envelope(
        bundle_fmt.LABEL,
        bundle_fmt.encode_body(claims_bytes, sealed),
        [world.signer.key],
    )
    with pytest.raises(FormatError, match="zz-scope"):
        authenticate(data, world.signer.root)


# -- properties ---------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=12)
    | st.binary(max_size=12)
)


def values(depth: int) -> st.SearchStrategy[Any]:
    """Values nested at most ``depth`` levels below the top."""
    if depth == 0:
        return SCALARS
    inner = st.deferred(lambda: values(depth - 1))
    return (
        SCALARS
        | st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    )


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(values(encoding.MAX_DEPTH))
def test_round_trip(value: Any) -> None:
    data = encoding.encode(value)
    back = encoding.decode(data, cap=CAP, what="x")
    assert same(value, back)
    assert encoding.encode(back) == data


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(0, 9), min_size=2))
def test_key_order_does_not_change_the_encoding(value: dict[str, int]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert encoding.encode(reordered) == encoding.encode(value)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_canonically_or_raise_format_error(data: bytes) -> None:
    try:
        value = encoding.decode(data, cap=CAP, what="x")
    except FormatError:
        return
    assert encoding.encode(value) == data
