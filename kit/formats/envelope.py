"""The signed envelope shared by every kit object (FORMAT.md section 3).

``[label: str, body: bin, signatures: [[key_id: str, sig: bin64], ...]]``

The signature covers ``label || 0x00 || body`` with ``body`` exactly as
received, never a re-encoding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from kit import encoding
from kit.crypto.sign import SIG_LEN, SigningKey, verify_signature
from kit.errors import FormatError, UnauthenticatedError
from kit.lazylog import LazyLogger

log = LazyLogger(__name__)

MAX_SIGNATURES = 8


class Envelope(NamedTuple):
    """A decoded envelope; ``raw`` is the bytes it was read from."""

    label: str
    body: bytes
    signatures: tuple[tuple[str, bytes], ...]
    raw: bytes

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


def seal_envelope(label: str, body: bytes, keys: list[SigningKey]) -> bytes:
    sigs = [[k.key_id, k.sign(label, body)] for k in keys]
    return encoding.encode([label, body, sigs])


def parse_envelope(data: bytes, *, label: str, cap: int, what: str) -> Envelope:
    """Decode an envelope and check its label. Signatures are not checked here.

    A well-formed envelope is read in one pass (:func:`_parse_fast`);
    anything that pass does not accept is decoded and read again one check
    at a time (:func:`_parse_precise`), which refuses it with the exact
    reason. tests/test_fast_paths.py checks that both agree.
    """
    return _parse_fast(data, label, cap) or _parse_precise(
        data, label=label, cap=cap, what=what
    )


def _parse_fast(data: bytes, label: str, cap: int) -> Envelope | None:
    """The envelope when ``data`` passes every check of :func:`_parse_precise`,
    else None (never an error). An envelope holds no map and no float: every
    value's exact type is checked here, which is what the strict decoder's
    tree walk would prove, and the canonical form is checked last."""
    obj = encoding.unpack_unchecked(data, cap, use_list=False)
    if type(obj) is not tuple or len(obj) != 3:
        return None
    got_label, body, sigs = obj
    if (
        type(got_label) is not str
        or got_label != label
        or type(body) is not bytes
        or type(sigs) is not tuple
        or not 1 <= len(sigs) <= MAX_SIGNATURES
    ):
        return None
    for item in sigs:
        if type(item) is not tuple or len(item) != 2:
            return None
        kid, sig = item
        if (
            type(sig) is not bytes
            or len(sig) != SIG_LEN
            or type(kid) is not str
            or _HEX32(kid) is None
        ):
            return None
    if not encoding.is_canonical(obj, data):
        return None
    return Envelope(label, body, sigs, data)


_HEX32 = encoding.HEX32_RE.fullmatch


def _parse_precise(data: bytes, *, label: str, cap: int, what: str) -> Envelope:
    """The reference reader: strict decode, then one check at a time."""
    obj = encoding.decode(data, cap=cap, what=what)
    if not isinstance(obj, list) or len(obj) != 3:
        raise FormatError(f"{what} is not a kit envelope (3-item array)")
    got_label, body, sigs = obj
    if got_label != label:
        raise FormatError(
            f"{what}: expected label {label!r}, got {str(got_label)[:40]!r}"
        )
    if not isinstance(body, bytes):
        raise FormatError(f"{what}: body must be bytes")
    if not isinstance(sigs, list) or not 1 <= len(sigs) <= MAX_SIGNATURES:
        raise FormatError(f"{what}: needs 1 to {MAX_SIGNATURES} signatures")
    parsed: list[tuple[str, bytes]] = []
    for item in sigs:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[1], bytes)
            or len(item[1]) != SIG_LEN
        ):
            raise FormatError(f"{what}: malformed signature entry")
        parsed.append(
            (encoding.check_text(item[0], f"{what} key id", encoding.HEX32_RE), item[1])
        )
    return Envelope(label, body, tuple(parsed), data)


def verify_envelope(
    env: Envelope, trusted: Mapping[str, bytes], *, threshold: int, what: str
) -> frozenset[str]:
    """Return the distinct trusted key ids whose signatures verify.

    A key that signs twice counts once. Raises UnauthenticatedError (uniform,
    no detail) when fewer than ``threshold`` distinct trusted keys verify.
    """
    good: set[str] = set()
    for kid, sig in env.signatures:
        pub = trusted.get(kid)
        if pub is not None and verify_signature(pub, env.label, env.body, sig):
            good.add(kid)
    if len(good) < threshold:
        raise UnauthenticatedError(what)
    return frozenset(good)


def withheld(what: str) -> FormatError:
    """The one error for any flaw found before a signature is checked
    (FORMAT.md 3.3): it names the object and nothing else."""
    return FormatError(
        f"{what} is malformed (details withheld until it is authenticated)"
    )


def parse_envelope_uniform(data: bytes, *, label: str, cap: int, what: str) -> Envelope:
    """:func:`parse_envelope`, failing with the uniform error; the detail goes
    to the debug log only."""
    try:
        return parse_envelope(data, label=label, cap=cap, what=what)
    except FormatError as exc:
        log.debug("%s refused before authentication: %s", what, exc)
        raise withheld(what) from None


def open_self_signed(
    data: bytes,
    *,
    label: str,
    cap: int,
    what: str,
    signing_keys: Callable[[Any], Mapping[str, bytes]],
    threshold: Callable[[Any], int] = lambda body: 1,
) -> tuple[Envelope, Any]:
    """Authenticate an object that carries its own public key(s), such as a
    trust root or an enrollment request, then return it decoded.

    ``signing_keys`` picks the keys out of the decoded body; any flaw up to
    and including the signature check raises the uniform error or
    UnauthenticatedError. The caller then reads the fields precisely.
    """
    try:
        env = parse_envelope(data, label=label, cap=cap, what=what)
        body = encoding.decode(env.body, cap=cap, what=what)
        keys = signing_keys(body)
        needed = threshold(body)
    except FormatError as exc:
        log.debug("%s refused before authentication: %s", what, exc)
        raise withheld(what) from None
    verify_envelope(env, keys, threshold=needed, what=what)
    return env, body


def peek_label(data: bytes, cap: int) -> str | None:
    """The label of an envelope, or None: to route a file to the right
    decoder, never to trust it."""
    try:
        obj = encoding.decode(data, cap=cap, what="file")
    except FormatError:
        return None
    if isinstance(obj, list) and obj and isinstance(obj[0], str):
        return obj[0]
    return None
