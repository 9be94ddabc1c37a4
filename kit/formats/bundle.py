"""Bundle: signed claims plus the secret sealed to one host (FORMAT.md 5).

Envelope body: ``{"claims": bin, "sealed": bin}``; ``claims`` is itself a
canonical msgpack map. The HPKE ``info`` is ``SEAL_INFO || SHA-256(claims)``,
so the ciphertext opens only under the claims it was sealed with.
"""

from __future__ import annotations

import hashlib
import operator
import re
from typing import Any, NamedTuple

from kit import encoding
from kit.crypto.seal import OVERHEAD
from kit.errors import FormatError
from kit.formats.envelope import Envelope, parse_envelope

LABEL = "kit/bundle/v1"
SEAL_INFO = b"kit/bundle-seal/v1\x00"
CAP = 64 * 1024
MAX_SECRET = 8 * 1024
MAX_LIFETIME = 90 * 24 * 3600
MAX_USES = 1000
MAX_COMMANDS = 16
MAX_ARGS = 32
ARG_RE = re.compile(r"[^\x00]{1,256}")
MAX_DATASETS = 32
MAX_APPROVALS = 32
RISKS = ("low", "medium", "high")
# How the secret may reach the child (kit/host/runner.py).
DELIVERY_MODES = ("env", "fd", "file", "stdin")


class Claims(NamedTuple):
    """The signed claims of a bundle (FORMAT.md 5.2)."""

    bundle_id: str
    issuer: str
    owner: str
    host: str
    host_key: str
    env: str
    task: str
    commands: tuple[tuple[str, ...], ...]
    secret_name: str
    issued_at: int
    not_before: int
    expires_at: int
    max_uses: int
    # Issue 5 axes. Python defaults exist for callers only: on the wire every
    # field is required (FORMAT.md 5.2).
    identity: str = ""  # the workflow identity; "" for an ad-hoc bundle
    declaration: bytes = b""  # SHA-256 of the identity's declaration file
    datasets: tuple[str, ...] = ()
    risk: str = "low"
    delivery: tuple[str, ...] = DELIVERY_MODES
    approvals: int = 0  # distinct approvals needed, at least (FORMAT.md 5.2)
    # The newest receipt of this host the signer has reconciled: the host's
    # journal must extend it (0 and b"": none yet).
    anchor_seq: int = 0
    anchor_head: bytes = b""

    def to_map(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "issuer": self.issuer,
            "owner": self.owner,
            "host": self.host,
            "host_key": self.host_key,
            "env": self.env,
            "task": self.task,
            "commands": [list(c) for c in self.commands],
            "secret_name": self.secret_name,
            "issued_at": self.issued_at,
            "not_before": self.not_before,
            "expires_at": self.expires_at,
            "max_uses": self.max_uses,
            "identity": self.identity,
            "declaration": self.declaration,
            "datasets": list(self.datasets),
            "risk": self.risk,
            "delivery": list(self.delivery),
            "approvals": self.approvals,
            "anchor_seq": self.anchor_seq,
            "anchor_head": self.anchor_head,
        }


class Bundle(NamedTuple):
    """A parsed bundle whose signature has NOT yet been checked."""

    envelope: Envelope
    claims_bytes: bytes
    sealed: bytes

    @property
    def seal_info(self) -> bytes:
        return SEAL_INFO + hashlib.sha256(self.claims_bytes).digest()


def seal_info_for(claims_bytes: bytes) -> bytes:
    return SEAL_INFO + hashlib.sha256(claims_bytes).digest()


def encode_body(claims_bytes: bytes, sealed: bytes) -> bytes:
    return encoding.encode({"claims": claims_bytes, "sealed": sealed})


_BODY_FIELDS = frozenset({"claims", "sealed"})


def parse_bundle(data: bytes) -> Bundle:
    """Structural parse only (step 1 of FORMAT.md 5.4). Raises FormatError."""
    env = parse_envelope(data, label=LABEL, cap=CAP, what="bundle")
    read = _body_fast(env.body)
    if read is None:
        body = encoding.decode(env.body, cap=CAP, what="bundle body")
        read = _read_body_fast(body) or _read_body_precise(body)
    return Bundle(env, *read)


_BODY_ORDER = ("claims", "sealed")


def _body_fast(raw: bytes) -> tuple[bytes, bytes] | None:
    """(claims, sealed) when the body bytes pass :func:`encoding.decode` and
    :func:`_read_body_precise`, else None: a map of two byte strings, keys
    in order, canonically encoded (see :func:`encoding.unpack_unchecked`)."""
    body = encoding.unpack_unchecked(raw, CAP)
    if type(body) is not dict or tuple(body) != _BODY_ORDER:
        return None
    read = _read_body_fast(body)
    if read is None or not encoding.is_canonical(body, raw):
        return None
    return read


def _read_body_fast(body: Any) -> tuple[bytes, bytes] | None:
    """(claims, sealed) when ``body`` passes every check of
    :func:`_read_body_precise`, else None."""
    if type(body) is not dict or body.keys() != _BODY_FIELDS:
        return None
    claims_bytes, sealed = body["claims"], body["sealed"]
    if (
        type(claims_bytes) is not bytes
        or len(claims_bytes) > CAP
        or type(sealed) is not bytes
        or not OVERHEAD < len(sealed) <= MAX_SECRET + OVERHEAD
    ):
        return None
    return claims_bytes, sealed


def _read_body_precise(body: Any) -> tuple[bytes, bytes]:
    f = encoding.Fields(body, "bundle body")
    claims_bytes = f.binary("claims", max_len=CAP)
    sealed = f.binary("sealed", max_len=MAX_SECRET + OVERHEAD)
    f.done()
    if len(sealed) <= OVERHEAD:
        raise FormatError("bundle: sealed secret is too short")
    return claims_bytes, sealed


def decode_claims(claims_bytes: bytes) -> Claims:
    """Decode claims (after the signature has been verified). Raises FormatError
    naming the field.

    The host reads claims before every release, so valid claims are decoded
    and read in one pass (:func:`_claims_fast`); anything that pass does not
    accept is decoded strictly and read again field by field
    (:func:`_read_claims_precise`), which refuses it naming the field at
    fault. tests/test_fast_paths.py checks that both agree, so the fast pass
    changes speed only.
    """
    fast = _claims_fast(claims_bytes)
    if fast is not None:
        return fast
    obj = encoding.decode(claims_bytes, cap=CAP, what="bundle claims")
    return _read_claims_precise(obj)


_FIELDS = frozenset(Claims._fields)
# The keys of a canonical claims map, in their encoded (sorted) order.
_ORDER = tuple(sorted(_FIELDS))


def _claims_fast(raw: bytes) -> Claims | None:
    """Claims when ``raw`` passes :func:`encoding.decode` and
    :func:`_read_claims_precise`, else None (never an error).

    No tree walk: :func:`_read_claims_fast` checks every value's exact type
    and the claims nest two levels, so what is left of the strict decoder's
    checks is the key order (checked here) and the canonical form (checked
    last, see :func:`encoding.unpack_unchecked`)."""
    obj = encoding.unpack_unchecked(raw, CAP, use_list=False)
    if type(obj) is not dict or tuple(obj) != _ORDER:
        return None
    claims = _read_claims_fast(obj)
    if claims is None or not encoding.is_canonical(obj, raw):
        return None
    return claims


# (field, pattern) for the text fields, each at most 256 characters.
_TEXTS = (
    ("bundle_id", encoding.HEX32_RE),
    ("issuer", encoding.HEX32_RE),
    ("owner", encoding.OWNER_RE),
    ("host", encoding.NAME_RE),
    ("host_key", encoding.HEX32_RE),
    ("env", encoding.NAME_RE),
    ("task", encoding.NAME_RE),
    ("secret_name", encoding.ENV_VAR_RE),
)
_text_values = operator.itemgetter(*(field for field, _ in _TEXTS))
# The text fields' patterns joined by newlines, for values joined the same
# way. No pattern matches a newline and each bounds its length under 256
# characters (tests/test_fast_paths.py checks both), so the whole matches
# exactly when each value matches its own pattern with at most 256
# characters, as Fields.text requires.
_TEXTS_RE = re.compile("\n".join(f"(?:{p.pattern})" for _, p in _TEXTS)).fullmatch
# (field, lowest, highest) for the integer fields.
_INTEGERS = (
    ("issued_at", encoding.TIME_MIN, encoding.TIME_MAX - 1),
    ("not_before", encoding.TIME_MIN, encoding.TIME_MAX - 1),
    ("expires_at", encoding.TIME_MIN, encoding.TIME_MAX - 1),
    ("max_uses", 1, MAX_USES),
    ("approvals", 0, MAX_APPROVALS),
    ("anchor_seq", 0, 1 << 62),
)


def _read_claims_fast(obj: Any) -> Claims | None:
    """Claims when ``obj``, a claims map as :func:`encoding.unpack_unchecked`
    decodes it with ``use_list=False`` (arrays as tuples), passes every
    check :func:`_read_claims_precise` makes, else None (never an error)."""
    if type(obj) is not dict or obj.keys() != _FIELDS:
        return None
    texts = _text_values(obj)
    for v in texts:
        if type(v) is not str:
            return None
    # One match for the eight text fields (see _TEXTS_RE); a field holding a
    # newline would shift the parts, so any newline at all is refused first.
    joined = "\n".join(texts)
    if joined.count("\n") != len(_TEXTS) - 1 or _TEXTS_RE(joined) is None:
        return None
    for field, lo, hi in _INTEGERS:
        v = obj[field]
        # An exact int: bool, a subclass of int, is refused as Fields.integer.
        if type(v) is not int or not lo <= v <= hi:
            return None
    cmds = obj["commands"]
    if type(cmds) is not tuple or not 1 <= len(cmds) <= MAX_COMMANDS:
        return None
    for cmd in cmds:
        if type(cmd) is not tuple or not 1 <= len(cmd) <= MAX_ARGS:
            return None
        for a in cmd:  # ARG_RE: 1 to 256 characters, no NUL
            if type(a) is not str or not 0 < len(a) <= 256 or "\x00" in a:
                return None
    datasets, delivery = obj["datasets"], obj["delivery"]
    if type(datasets) is not tuple or len(datasets) > MAX_DATASETS:
        return None
    for n in datasets:
        if type(n) is not str or _NAME(n) is None:
            return None
    if type(delivery) is not tuple or not 1 <= len(delivery) <= len(DELIVERY_MODES):
        return None
    for m in delivery:  # modes are names, so membership implies the name check
        if m not in DELIVERY_MODES:
            return None
    identity, declaration = obj["identity"], obj["declaration"]
    anchor_head, not_before = obj["anchor_head"], obj["not_before"]
    expires_at = obj["expires_at"]
    if (
        len(set(delivery)) != len(delivery)
        or len(set(datasets)) != len(datasets)
        or _UNSAFE_ENV(obj["secret_name"].upper()) is not None
        or type(identity) is not str
        or (identity != "" and _NAME(identity) is None)
        or type(declaration) is not bytes
        or len(declaration) != (32 if identity else 0)
        or type(anchor_head) is not bytes
        or len(anchor_head) != (32 if obj["anchor_seq"] else 0)
        or obj["risk"] not in RISKS
        or type(obj["risk"]) is not str
        or not not_before < expires_at <= not_before + MAX_LIFETIME
        or obj["issued_at"] > not_before
    ):
        return None
    # Every field is checked and present (the key set is exactly _FIELDS),
    # and its arrays are tuples, as the precise reader makes them; so the
    # record is made in one step from the values in field order.
    return _make_claims(_field_values(obj))


_NAME = encoding.NAME_RE.fullmatch
_UNSAFE_ENV = encoding.UNSAFE_ENV_RE.fullmatch
# The map's values in Claims field order, and the record made from them.
_field_values = operator.itemgetter(*Claims._fields)
_make_claims = Claims._make


def _read_claims_precise(obj: Any) -> Claims:
    """The reference reader: one check at a time, each refusal naming its
    field."""
    f = encoding.Fields(obj, "bundle claims")
    commands: list[tuple[str, ...]] = []
    for i, cmd in enumerate(f.array("commands", MAX_COMMANDS)):
        if not isinstance(cmd, list) or not 1 <= len(cmd) <= MAX_ARGS:
            raise FormatError(
                f"bundle claims command {i}: expected 1 to {MAX_ARGS} arguments"
            )
        commands.append(
            tuple(
                encoding.check_text(a, f"bundle claims command {i}", ARG_RE)
                for a in cmd
            )
        )
    c = Claims(
        bundle_id=f.text("bundle_id", encoding.HEX32_RE),
        issuer=f.text("issuer", encoding.HEX32_RE),
        owner=f.text("owner", encoding.OWNER_RE),
        host=f.text("host", encoding.NAME_RE),
        host_key=f.text("host_key", encoding.HEX32_RE),
        env=f.text("env", encoding.NAME_RE),
        task=f.text("task", encoding.NAME_RE),
        commands=tuple(commands),
        secret_name=encoding.check_env_name(
            f.text("secret_name", encoding.ENV_VAR_RE), "bundle claims secret_name"
        ),
        issued_at=f.time("issued_at"),
        not_before=f.time("not_before"),
        expires_at=f.time("expires_at"),
        max_uses=f.integer("max_uses", 1, MAX_USES),
        identity=f.text("identity", max_len=63),
        declaration=f.binary("declaration", max_len=32),
        datasets=_names(f.array("datasets", MAX_DATASETS), "datasets"),
        risk=f.choice("risk", RISKS),
        delivery=_names(f.array("delivery", len(DELIVERY_MODES)), "delivery"),
        approvals=f.integer("approvals", 0, MAX_APPROVALS),
        anchor_seq=f.integer("anchor_seq", 0, 1 << 62),
        anchor_head=f.binary("anchor_head", max_len=32),
    )
    f.done()
    check_claims_shape(c)
    return c


def _names(items: list[Any], field: str) -> tuple[str, ...]:
    names = tuple(
        encoding.check_text(v, f"bundle claims {field}", encoding.NAME_RE)
        for v in items
    )
    if len(set(names)) != len(names):
        raise FormatError(f"bundle claims {field}: a name is listed twice")
    return names


def check_claims_shape(c: Claims) -> None:
    """Relations between fields that hold for every valid bundle."""
    if c.identity:
        encoding.check_text(c.identity, "bundle claims identity", encoding.NAME_RE)
    if len(c.declaration) != (32 if c.identity else 0):
        raise FormatError(
            "bundle claims: declaration must be the 32-byte digest of the "
            "identity's declaration, and empty for an ad-hoc bundle"
        )
    if len(c.anchor_head) != (32 if c.anchor_seq else 0):
        raise FormatError(
            "bundle claims: anchor_head must be a 32-byte receipt hash when "
            "anchor_seq is set, and empty when it is 0"
        )
    if not c.delivery or any(m not in DELIVERY_MODES for m in c.delivery):
        raise FormatError(
            "bundle claims delivery: expected a non-empty list from "
            + ", ".join(DELIVERY_MODES)
        )
    if not c.commands:
        raise FormatError(
            "bundle claims: commands is empty; an empty scope allows nothing"
        )
    if c.expires_at <= c.not_before:
        raise FormatError("bundle claims: expires_at is not after not_before")
    if c.expires_at - c.not_before > MAX_LIFETIME:
        raise FormatError(
            f"bundle claims: lifetime {c.expires_at - c.not_before} s "
            f"exceeds the {MAX_LIFETIME} s cap"
        )
    if c.not_before < c.issued_at:
        raise FormatError("bundle claims: not_before precedes issued_at")
