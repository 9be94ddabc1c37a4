"""Strict, bounded, canonical msgpack (docs/FORMAT.md section 2).

Every byte string kit reads may have been written by an attacker, so the
decoder checks the size cap before parsing, bounds every container, and
refuses anything that has more than one encoding: duplicate or unsorted map
keys, non-string keys, extension types, floats, and integers or lengths in a
wider form than needed (checked by re-encoding and comparing bytes).
"""

from __future__ import annotations

import re
import threading
from typing import Any

import msgpack

from kit.errors import FormatError

MAX_DEPTH = 8

# Times are Unix seconds within [2000-01-01, 2100-01-01).
TIME_MIN = 946_684_800
TIME_MAX = 4_102_444_800

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
HEX32_RE = re.compile(r"[0-9a-f]{32}")
ENV_VAR_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
# Variables that change how a program loads code or reads its startup files:
# never passed through with --keep-env, never a secret's variable name.
UNSAFE_ENV_RE = re.compile(
    r"(LD_|DYLD_|PYTHON|PERL|RUBY|NODE_|JAVA_|_JAVA_|GCONV_|BASH_|GLIBC_|MALLOC_)"
    r".*|ENV|SHELLOPTS|PS4|IFS|CDPATH|LOCPATH|NLSPATH|CLASSPATH|HOSTALIASES"
    r"|PATH|HOME|SHELL|TMPDIR|LANG|LANGUAGE|TERM|TZ|USER|LOGNAME|PWD|LC_.*"
)


def check_env_name(name: str, what: str) -> str:
    """A variable name kit may set for a child: plain, and not one that
    changes how the child loads code (e.g. LD_PRELOAD, PYTHONPATH)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
        raise FormatError(f"{what}: {name[:40]!r} is not a variable name")
    if UNSAFE_ENV_RE.fullmatch(name.upper()):
        raise FormatError(
            f"{what}: {name} is reserved: it changes how programs start or find code"
        )
    return name


# An accountable owner: a name or a team mailbox, lower case.
OWNER_RE = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}(@[a-z0-9][a-z0-9.-]{0,127})?")


def _refuse_ext(code: int, data: bytes) -> Any:
    raise FormatError(f"extension type {code} is not allowed")


def _sorted_pairs(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    previous: bytes | None = None
    for key, _ in pairs:
        if not isinstance(key, str):
            raise FormatError("map keys must be strings")
        encoded = key.encode("utf-8")
        if previous is not None and encoded <= previous:
            raise FormatError(f"map key {key!r} is duplicated or out of order")
        previous = encoded
    return dict(pairs)


def encode(obj: Any) -> bytes:
    """Canonical encoding: map keys sorted by their UTF-8 bytes, smallest forms."""
    return msgpack.packb(_sort_maps(obj), use_bin_type=True)


def _sort_maps(obj: Any) -> Any:
    if isinstance(obj, dict):
        if all(type(k) is str for k in obj):
            # Code point order is UTF-8 byte order, without encoding each key.
            order = sorted(obj)
        else:  # a key that is not text fails here, as it always has
            order = sorted(obj, key=lambda s: s.encode())
        return {
            k: v if type(v) in _SCALARS else _sort_maps(v)
            for k in order
            for v in (obj[k],)
        }
    if isinstance(obj, list | tuple):
        return [v if type(v) in _SCALARS else _sort_maps(v) for v in obj]
    return obj


def decode(data: bytes, *, cap: int, what: str) -> Any:
    """Decode ``data`` strictly. Raises FormatError naming ``what`` on any flaw.

    Two passes, one fast, one precise. The fast pass decodes without hooks
    (msgpack builds the maps natively), walks the tree once checking depth,
    value types and key order (:func:`_plain`), then re-encodes the whole
    object once and compares bytes: a duplicated key shrinks its map, and
    any wider form than needed changes the bytes, so both fail the
    comparison. Anything the fast pass does not accept is decoded again by
    :func:`_decode_precise`, which refuses it with the exact reason, so the
    fast pass decides speed only: what is accepted and how a refusal reads
    are the precise pass's.
    """
    if len(data) > cap:
        raise FormatError(f"{what} is {len(data)} bytes, over the {cap}-byte cap")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_str_len=cap,
            max_bin_len=cap,
            max_array_len=min(cap, 100_000),
            max_map_len=min(cap, 1_000),
            max_ext_len=cap,
        )
    except _DECODE_ERRORS:
        pass  # the precise pass below says what is wrong
    else:
        if _plain(obj, 0) and msgpack.packb(obj, use_bin_type=True) == data:
            return obj
    # The precise pass refuses everything the fast pass did not accept; were
    # they ever to disagree, its verdict is the one kit has always had.
    return _decode_precise(data, cap=cap, what=what)


def unpack_unchecked(data: bytes, cap: int, *, use_list: bool = True) -> Any:
    """The first half of a typed fast path: ``data`` decoded with msgpack's
    defaults (arrays as tuples with ``use_list=False``) and no check of
    kit's rules, or None when it is over ``cap`` or does not decode (None is
    also what nil decodes to; fast readers expect a container, so they lose
    nothing).

    Only for a reader that then checks every value's exact type (``type(v)
    is int``, never isinstance: a float, a Timestamp or an ExtType then fails
    it), every map's key order (``tuple(m) == SORTED_KEYS``) and nesting by
    the shape it expects, and finally :func:`is_canonical`. Such a reader
    accepts only what :func:`decode` followed by the precise reader
    accepts; on None it must hand the bytes to them, so refusals read the
    same (tests/test_fast_paths.py compares the two on every format that
    has a fast reader).
    """
    if len(data) > cap:
        return None
    try:
        return _unpackb(data, raw=False, use_list=use_list)
    except _DECODE_ERRORS:
        return None


def is_canonical(obj: Any, data: bytes) -> bool:
    """True when ``obj``, whose maps are known to hold their keys in sorted
    order and whose values are known to be exactly str, bytes, int, bool,
    None, list, tuple or dict, encodes to ``data``: a duplicated key shrinks its map
    and a wider form than needed changes the bytes, so both fail."""
    packer = getattr(_local, "packer", None)
    if packer is None:  # one per thread: a Packer keeps a buffer
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    encoded: bytes = packer.pack(obj)
    return encoded == data


_unpackb = msgpack.unpackb
_local = threading.local()


# What a decoder may raise for hostile bytes: OutOfData, BufferFull, ExtraData,
# bad bytes (the C extension and the pure-Python fallback differ), depth.
_DECODE_ERRORS = (
    FormatError,
    msgpack.StackError,
    RecursionError,
    ValueError,
    TypeError,
    msgpack.UnpackException,
)
# The only value types kit formats contain besides arrays and maps.
_SCALARS = frozenset({str, bytes, int, bool, type(None)})


def _plain(obj: Any, depth: int) -> bool:
    """True when ``obj`` nests at most MAX_DEPTH levels, holds only maps with
    string keys in strictly increasing order (code point order is UTF-8 byte
    order), arrays and the scalar types above (so no float, no Timestamp).
    The recursion stops at MAX_DEPTH, whatever the input's depth."""
    kind = type(obj)
    if kind is dict:
        if obj and depth >= MAX_DEPTH:
            return False
        previous = ""
        first = True
        for key, value in obj.items():
            if type(key) is not str or (not first and key <= previous):
                return False
            first = False
            previous = key
            if type(value) not in _SCALARS and not _plain(value, depth + 1):
                return False
        return True
    if kind is list:
        if obj and depth >= MAX_DEPTH:
            return False
        for value in obj:
            if type(value) not in _SCALARS and not _plain(value, depth + 1):
                return False
        return True
    return kind in _SCALARS


def _decode_precise(data: bytes, *, cap: int, what: str) -> Any:
    """The reference decoder: every check one at a time, each with its own
    message. Used to explain a refusal (and by tests as the oracle)."""
    if len(data) > cap:
        raise FormatError(f"{what} is {len(data)} bytes, over the {cap}-byte cap")
    unpacker = msgpack.Unpacker(
        raw=False,
        use_list=True,
        strict_map_key=True,
        object_pairs_hook=_sorted_pairs,
        ext_hook=_refuse_ext,
        max_buffer_size=max(cap, 1),
        max_str_len=cap,
        max_bin_len=cap,
        max_array_len=min(cap, 100_000),
        max_map_len=min(cap, 1_000),
        max_ext_len=cap,
    )
    try:
        unpacker.feed(data)
        obj = unpacker.unpack()
        if unpacker.tell() != len(data):
            raise FormatError(f"{len(data) - unpacker.tell()} trailing byte(s)")
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None
    except (msgpack.StackError, RecursionError):
        raise FormatError(f"{what} nests too deeply") from None
    except (ValueError, TypeError, msgpack.UnpackException):
        # OutOfData, BufferFull, bad bytes. The C extension and the pure-Python
        # fallback raise different classes for the same bytes, so one message.
        raise FormatError(f"{what} is truncated or not valid msgpack") from None
    _check_tree(obj, what)
    if encode(obj) != data:
        raise FormatError(f"{what} is not canonically encoded")
    return obj


def _check_tree(obj: Any, what: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and floats anywhere (iteratively, so
    a hostile depth cannot exhaust the Python stack)."""
    stack: list[tuple[int, Any]] = [(0, obj)]
    while stack:
        depth, value = stack.pop()
        if depth > MAX_DEPTH:
            raise FormatError(f"{what} nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, float):
            raise FormatError(f"{what} contains a float; kit formats have none")
        if isinstance(value, msgpack.Timestamp):
            # msgpack decodes extension type -1 itself, without calling ext_hook.
            raise FormatError(f"{what}: extension type -1 is not allowed")
        if isinstance(value, dict):
            stack.extend((depth + 1, v) for v in value.values())
        elif isinstance(value, list):
            stack.extend((depth + 1, v) for v in value)


class Fields:
    """Typed, exhaustive reading of one decoded map.

    Each accessor checks type and range; :meth:`done` refuses fields nobody
    asked for, so an unknown claim is never silently ignored.
    """

    def __init__(self, obj: Any, what: str) -> None:
        if not isinstance(obj, dict):
            raise FormatError(f"{what} must be a map")
        self._obj: dict[str, Any] = obj
        self._seen: set[str] = set()
        self.what = what

    def _get(self, name: str) -> Any:
        if name not in self._obj:
            raise FormatError(f"{self.what} lacks field {name!r}")
        self._seen.add(name)
        return self._obj[name]

    def _bad(self, name: str, expected: str, got: Any) -> FormatError:
        shown = repr(got) if not isinstance(got, bytes) else f"{len(got)} bytes"
        return FormatError(
            f"{self.what} field {name!r}: expected {expected}, got {shown[:60]}"
        )

    def integer(self, name: str, lo: int, hi: int) -> int:
        v = self._get(name)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._bad(name, "an integer", v)
        if not lo <= v <= hi:
            raise self._bad(name, f"an integer in [{lo}, {hi}]", v)
        return v

    def time(self, name: str) -> int:
        return self.integer(name, TIME_MIN, TIME_MAX - 1)

    def text(
        self, name: str, pattern: re.Pattern[str] | None = None, max_len: int = 256
    ) -> str:
        v = self._get(name)
        if not isinstance(v, str) or len(v) > max_len:
            raise self._bad(name, f"a string of at most {max_len} characters", v)
        if pattern is not None and not pattern.fullmatch(v):
            raise self._bad(name, f"a string matching {pattern.pattern}", v)
        return v

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        v = self._get(name)
        if v not in allowed or not isinstance(v, str):
            raise self._bad(name, "one of " + ", ".join(allowed), v)
        return v

    def binary(
        self, name: str, length: int | None = None, max_len: int = 1 << 20
    ) -> bytes:
        v = self._get(name)
        if not isinstance(v, bytes):
            raise self._bad(name, "bytes", v)
        if length is not None and len(v) != length:
            raise self._bad(name, f"{length} bytes", v)
        if len(v) > max_len:
            raise self._bad(name, f"at most {max_len} bytes", v)
        return v

    def array(self, name: str, max_items: int) -> list[Any]:
        v = self._get(name)
        if not isinstance(v, list) or len(v) > max_items:
            raise self._bad(name, f"an array of at most {max_items} items", v)
        return v

    def raw(self, name: str) -> Any:
        return self._get(name)

    def done(self) -> None:
        unknown = sorted(set(self._obj) - self._seen)
        if unknown:
            raise FormatError(f"{self.what} has unknown field(s): {', '.join(unknown)}")


# The common patterns in words, for messages people read.
_IN_WORDS = {
    HEX32_RE.pattern: "32 lowercase hex digits (an id as kit prints it)",
    NAME_RE.pattern: "a name of 1 to 63 characters from a-z, 0-9, '.', '_' and "
    "'-', starting with a letter or digit",
}


def check_text(value: Any, what: str, pattern: re.Pattern[str]) -> str:
    """Validate a free-standing string (e.g. an array element or a CLI value)."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        wanted = _IN_WORDS.get(pattern.pattern, f"a string matching {pattern.pattern}")
        raise FormatError(f"{what}: expected {wanted}, got {str(value)[:60]!r}")
    return value
