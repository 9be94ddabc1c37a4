"""Revocation lists (FORMAT.md 12): signed by a revoker key of the pinned
trust root, versioned, with an issue time and an expiry. Hosts refuse every
release once their list has expired, and never accept an older version."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from kit import encoding
from kit.crypto.sign import SigningKey
from kit.errors import FormatError
from kit.formats.envelope import (
    Envelope,
    parse_envelope_uniform,
    seal_envelope,
    verify_envelope,
)

LABEL = "kit/revocation/v1"
CAP = 1 << 20
MAX_ENTRIES = 10_000
MAX_VALIDITY = 90 * 86400
# kind -> how its value is spelled; one spelling per identifier.
KINDS = ("bundle", "identity", "host", "env", "key", "before")


class Entry(NamedTuple):
    """Entries sort by (kind, value), as tuples do."""

    kind: str
    value: str  # for "before": a decimal Unix time, canonical (no sign, no 0s)


class RevocationList(NamedTuple):
    name: str
    version: int
    issued_at: int
    expires_at: int
    entries: tuple[Entry, ...]
    envelope: Envelope

    @property
    def digest(self) -> bytes:
        return self.envelope.digest

    def values(self, kind: str) -> set[str]:
        return {e.value for e in self.entries if e.kind == kind}


def revoking_entry(
    entries: Iterable[tuple[str, str]],
    *,
    bundle_id: str,
    identity: str,
    host: str,
    env: str,
    issuer: str,
    issued_at: int,
) -> tuple[str, str] | None:
    """The entry that revokes a bundle with these claims, or None (FORMAT.md
    12): one naming its id, identity, host, env or issuer key (in that order
    when several do), else the latest ``before`` cutoff its issue time
    precedes. The host's check and the signer's export decide alike."""
    named: set[tuple[str, str]] = set()
    cutoff = 0
    for kind, value in entries:
        if kind == "before":
            cutoff = max(cutoff, int(value))
        else:
            named.add((kind, value))
    for subject in (
        ("bundle", bundle_id),
        ("identity", identity),
        ("host", host),
        ("env", env),
        ("key", issuer),
    ):
        if subject[1] and subject in named:
            return subject
    return ("before", str(cutoff)) if issued_at < cutoff else None


def check_entry(kind: str, value: str) -> Entry:
    """One entry in its only spelling, or FormatError."""
    if kind not in KINDS:
        raise FormatError(
            f"revocation entry kind {kind!r} is not one of " + ", ".join(KINDS)
        )
    if kind in ("bundle", "key"):
        encoding.check_text(value, f"revocation {kind}", encoding.HEX32_RE)
    elif kind == "before":
        if (
            not value.isdigit()
            or value != str(int(value))
            or not (encoding.TIME_MIN <= int(value) < encoding.TIME_MAX)
        ):
            raise FormatError(f"revocation before: {value!r} is not a Unix time")
    else:
        encoding.check_text(value, f"revocation {kind}", encoding.NAME_RE)
    return Entry(kind, value)


def sign_list(
    name: str,
    version: int,
    issued_at: int,
    expires_at: int,
    entries: list[Entry],
    key: SigningKey,
) -> bytes:
    body = encoding.encode(
        {
            "name": name,
            "version": version,
            "issued_at": issued_at,
            "expires_at": expires_at,
            "entries": [[e.kind, e.value] for e in sorted(set(entries))],
        }
    )
    return seal_envelope(LABEL, body, [key])


def load_list(
    data: bytes, revokers: Mapping[str, bytes], threshold: int = 1
) -> RevocationList:
    """Authenticate against the trust root's revoker keys (``threshold``
    distinct ones), then decode. Malformed entries reject the whole list."""
    env = parse_envelope_uniform(data, label=LABEL, cap=CAP, what="revocation list")
    verify_envelope(env, revokers, threshold=threshold, what="revocation list")
    f = encoding.Fields(
        encoding.decode(env.body, cap=CAP, what="revocation list"), "revocation list"
    )
    name = f.text("name", encoding.NAME_RE)
    version = f.integer("version", 1, 1 << 40)
    issued_at = f.time("issued_at")
    expires_at = f.time("expires_at")
    raw: list[Any] = f.array("entries", MAX_ENTRIES)
    f.done()
    entries = []
    for i, item in enumerate(raw):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(x, str) for x in item)
        ):
            raise FormatError(f"revocation entry {i}: expected [kind, value]")
        entries.append(check_entry(item[0], item[1]))
    if entries != sorted(set(entries)):
        raise FormatError("revocation entries are duplicated or out of order")
    if not 0 < expires_at - issued_at <= MAX_VALIDITY:
        raise FormatError(f"revocation list validity must be 1 s to {MAX_VALIDITY} s")
    return RevocationList(name, version, issued_at, expires_at, tuple(entries), env)
