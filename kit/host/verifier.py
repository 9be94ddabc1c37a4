"""Offline verification of a bundle (FORMAT.md 5.4). Pure: no I/O, no clock.

Steps, in order; the first that fails decides the refusal:

1. parse the envelope strictly                      -> FormatError
2. issuer signature by a key the pinned root trusts  -> UnauthenticatedError
3. decode the signed claims strictly                 -> FormatError (precise)
4. the pinned trust root has not expired             -> trust-root-expired
5. sealed to this host (name and HPKE key id)        -> wrong-host
6. environment matches exactly                       -> wrong-env
7. task matches exactly                              -> wrong-task
8. now within [not_before, expires_at] +/- leeway    -> not-yet-valid / expired
9. command starts with an allowed argv prefix        -> command-not-allowed
   (skipped by ``kit verify`` when no command is given)
Then, by the caller: uses left (atomically) and the HPKE open.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.errors import DeniedError
from kit.formats.bundle import Bundle, Claims, decode_claims, parse_bundle
from kit.formats.envelope import verify_envelope
from kit.formats.trustroot import TrustRoot

DEFAULT_LEEWAY = 30
MAX_LEEWAY = 300


@dataclass(frozen=True)
class HostIdentity:
    name: str
    env: str
    hpke_key_id: str


@dataclass(frozen=True)
class Verified:
    bundle: Bundle
    claims: Claims


def authenticate(data: bytes, root: TrustRoot) -> Verified:
    """Steps 1 to 3."""
    bundle = parse_bundle(data)
    verify_envelope(
        bundle.envelope, root.keys_for("issuer"), threshold=1, what="bundle"
    )
    return Verified(bundle, decode_claims(bundle.claims_bytes))


def _span(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min ({seconds} s)"
    return f"{seconds // 3600} h ({seconds} s)"


def check_scope(
    v: Verified,
    *,
    root: TrustRoot,
    host: HostIdentity,
    task: str,
    command: tuple[str, ...] | None,
    now: int,
    leeway: int = DEFAULT_LEEWAY,
) -> None:
    """Steps 4 to 9. Raises DeniedError with a stable code and exact detail."""
    c = v.claims
    if now > root.expires_at:
        raise DeniedError(
            "trust-root-expired",
            f"the pinned trust root expired {_span(now - root.expires_at)}"
            " ago; import a fresh one",
        )
    if c.host != host.name or c.host_key != host.hpke_key_id:
        raise DeniedError(
            "wrong-host",
            f"bundle is for host {c.host!r} (key {c.host_key[:12]}), "
            f"this is {host.name!r} (key {host.hpke_key_id[:12]})",
        )
    if c.env != host.env:
        raise DeniedError(
            "wrong-env", f"bundle is for env {c.env!r}, this host is {host.env!r}"
        )
    if c.task != task:
        raise DeniedError("wrong-task", f"bundle is for task {c.task!r}, not {task!r}")
    if now + leeway < c.not_before:
        raise DeniedError(
            "not-yet-valid",
            f"bundle is not valid for another "
            f"{_span(c.not_before - now)} (leeway {leeway} s)",
        )
    if now - leeway > c.expires_at:
        raise DeniedError(
            "expired",
            f"bundle expired {_span(now - c.expires_at)} ago (leeway {leeway} s)",
        )
    if command is not None and not any(command[: len(p)] == p for p in c.commands):
        allowed = "; ".join(" ".join(p) for p in c.commands)
        raise DeniedError(
            "command-not-allowed",
            f"command {' '.join(command)[:80]!r} is not within the "
            f"allowed commands: {allowed[:160]}",
        )
