"""Offline verification of a bundle (FORMAT.md 5.4). Pure: no I/O, no clock.

Steps, in order; the first that fails decides the refusal:

1. parse the envelope strictly                      -> FormatError (uniform)
2. issuer signature by a key the pinned root trusts  -> UnauthenticatedError
3. decode the signed claims strictly                 -> FormatError (precise);
   the issuer claim names the key that signed        -> issuer-mismatch;
   approvals by distinct approver keys, as many as
   the trust root asks for the bundle's risk         -> approvals-missing
4. the pinned trust root has not expired             -> trust-root-expired
5. the host clock is not behind its floor            -> clock-behind-floor
6. sealed to this host (name and HPKE key id)        -> wrong-host
7. environment is this host's and its policy serves  -> wrong-env;
   the bundle's risk level is one the policy accepts -> risk-not-accepted
8. task matches exactly                              -> wrong-task
9. not issued after now + leeway                     -> from-the-future
10. lifetime and uses within the host policy caps    -> lifetime-over-cap,
                                                        uses-over-cap
11. now within [not_before, expires_at] +/- leeway   -> not-yet-valid / expired
12. command starts with an allowed argv prefix       -> command-not-allowed
    (skipped by ``kit verify`` when no command is given)
13. every dataset asked for is in the bundle's list  -> dataset-not-allowed
14. the delivery mode asked for is one it allows     -> delivery-not-allowed
Then, by the caller: uses left (atomically) and the HPKE open.
Leeway applies to steps 5, 9 and 11 only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from kit.crypto.sign import verify_signature
from kit.errors import DeniedError, FormatError
from kit.formats.bundle import Bundle, Claims, decode_claims, parse_bundle
from kit.formats.envelope import verify_envelope, withheld
from kit.formats.revocation import RevocationList, revoking_entry
from kit.formats.trustroot import TrustRoot
from kit.host.policy import HostPolicy
from kit.lazylog import LazyLogger

log = LazyLogger(__name__)


class HostIdentity(NamedTuple):
    name: str
    env: str
    hpke_key_id: str


class Request(NamedTuple):
    """What the caller asks to do with a bundle."""

    task: str
    command: tuple[str, ...] | None  # None: not checked (kit verify without one)
    datasets: tuple[str, ...] = ()  # every dataset the task will touch
    delivery: str | None = None  # None: not checked


class Verified(NamedTuple):
    bundle: Bundle
    claims: Claims


def authenticate(data: bytes, root: TrustRoot, *, approvals: bool = True) -> Verified:
    """Steps 1 to 3.

    Raises FormatError("bundle is malformed") with no detail for any
    structural flaw before the signature is checked (the detail goes to the
    debug log only), UnauthenticatedError when no pinned issuer key signed it,
    and, once authenticated, FormatError naming the claim field at fault or
    DeniedError("issuer-mismatch").
    """
    try:
        bundle = parse_bundle(data)
    except FormatError as exc:
        log.debug("bundle refused before authentication: %s", exc)
        raise withheld("bundle") from None
    signers = verify_envelope(
        bundle.envelope,
        root.keys_for("issuer"),
        threshold=root.thresholds["issuer"],
        what="bundle",
    )
    claims = decode_claims(bundle.claims_bytes)
    if claims.issuer not in signers:
        raise DeniedError(
            "issuer-mismatch",
            f"the claims name issuer key {claims.issuer[:12]} but the bundle is "
            f"signed by {', '.join(sorted(k[:12] for k in signers))}",
        )
    if approvals:
        check_approvals(bundle, claims, root)
    return Verified(bundle, claims)


def check_approvals(bundle: Bundle, claims: Claims, root: TrustRoot) -> None:
    """As many distinct approver signatures as the bundle's claims ask for,
    and at least what the pinned root asks for its risk level."""
    needed = max(claims.approvals, root.approvals[claims.risk])
    if needed == 0:
        return  # no count of approvals can fall short of none
    approvers = approvals_of(bundle, root)
    if len(approvers) < needed:
        by = ", ".join(root.label_of(k) for k in sorted(approvers)) or "nobody"
        raise DeniedError(
            "approvals-missing",
            f"a {claims.risk}-risk bundle needs {needed} distinct approval(s); it "
            f"has {len(approvers)} ({by})"
            + (
                ""
                if root.keys_for("approver")
                else "; the pinned trust root names "
                "no approver keys: import a newer one"
            ),
        )


def approvals_of(bundle: Bundle, root: TrustRoot) -> frozenset[str]:
    """The distinct approver keys of the pinned root whose signatures over the
    bundle verify. A key signing twice counts once; signatures by keys the
    root does not name as approvers count for nothing."""
    keys = root.keys_for("approver")
    return frozenset(
        kid
        for kid, sig in bundle.envelope.signatures
        if kid in keys
        and verify_signature(
            keys[kid], bundle.envelope.label, bundle.envelope.body, sig
        )
    )


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
    policy: HostPolicy,
    floor: int,
    request: Request,
    now: int,
    revoked: RevocationList | None = None,
) -> None:
    """Steps 4 to 14. Raises DeniedError with a stable code and exact detail."""
    c = v.claims
    task, command = request.task, request.command
    leeway = policy.leeway
    check_revocation(c, revoked, now=now, leeway=leeway)
    if now > root.expires_at:
        raise DeniedError(
            "trust-root-expired",
            f"the pinned trust root expired {_span(now - root.expires_at)} ago; "
            "import the renewed one from the signer's next export (kit trust "
            "renew, then kit export there; kit import here)",
        )
    if now + leeway < floor:
        raise DeniedError(
            "clock-behind-floor",
            f"this host's clock ({_utc(now)}) is {_span(floor - now)} behind its "
            f"floor ({_utc(floor)}), the latest trustworthy time it has seen; "
            f"fix the clock (leeway {leeway} s)",
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
    if c.env not in policy.environments:
        raise DeniedError(
            "wrong-env",
            f"env {c.env!r} is not among the environments this host's policy "
            f"serves ({', '.join(policy.environments)})",
        )
    if c.risk not in policy.risk_levels:
        raise DeniedError(
            "risk-not-accepted",
            f"risk: bundle is {c.risk}-risk; this host's policy accepts "
            f"{', '.join(policy.risk_levels) or 'no risk level'}",
        )
    if c.task != task:
        raise DeniedError(
            "wrong-task", f"bundle is for task {c.task!r}, not {task[:64]!r}"
        )
    if c.issued_at > now + leeway:
        raise DeniedError(
            "from-the-future",
            f"host clock behind or bundle from the future: issued "
            f"{_span(c.issued_at - now)} ahead of this host's clock "
            f"(leeway {leeway} s)",
        )
    lifetime = c.expires_at - c.not_before
    if lifetime > policy.max_lifetime:
        raise DeniedError(
            "lifetime-over-cap",
            f"bundle lifetime {_span(lifetime)} exceeds this host's max_lifetime "
            f"{_span(policy.max_lifetime)}",
        )
    if c.max_uses > policy.max_uses:
        raise DeniedError(
            "uses-over-cap",
            f"bundle allows {c.max_uses} uses, over this host's max_uses "
            f"{policy.max_uses}",
        )
    if now + leeway < c.not_before:
        raise DeniedError(
            "not-yet-valid",
            f"bundle is not valid for another {_span(c.not_before - now)} "
            f"(leeway {leeway} s)",
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
            f"command: {' '.join(command)[:80]!r} is not within the "
            f"allowed commands: {allowed[:160]}",
        )
    for dataset in request.datasets:
        if dataset not in c.datasets:
            raise DeniedError(
                "dataset-not-allowed",
                f"dataset: {dataset[:63]!r} is not within the bundle's datasets: "
                f"{', '.join(c.datasets) or 'none'}",
            )
    if request.delivery is not None and request.delivery not in c.delivery:
        raise DeniedError(
            "delivery-not-allowed",
            f"delivery: the bundle does not allow --deliver {request.delivery}; "
            f"it allows {', '.join(c.delivery)}",
        )


def check_revocation(
    c: Claims, revoked: RevocationList | None, *, now: int, leeway: int
) -> None:
    """A fresh list that names none of the bundle's identifiers. A host that
    has never received a list has none to check (docs/LIMITATIONS.md)."""
    if revoked is None:
        return
    if now - leeway > revoked.expires_at:
        raise DeniedError(
            "revocation-list-stale",
            f"the revocation list v{revoked.version} expired "
            f"{_span(now - revoked.expires_at)} ago (at {_utc(revoked.expires_at)}); "
            "import a fresh one: every kit export carries one",
        )
    found = revoking_entry(
        revoked.entries,
        bundle_id=c.bundle_id,
        identity=c.identity,
        host=c.host,
        env=c.env,
        issuer=c.issuer,
        issued_at=c.issued_at,
    )
    if found is None:
        return
    kind, value = found
    if kind == "before":
        raise DeniedError(
            "revoked",
            f"everything issued before {_utc(int(value))} is revoked; this bundle "
            f"was issued at {_utc(c.issued_at)}",
        )
    raise DeniedError(
        "revoked", f"{kind} {value} is revoked (revocation list v{revoked.version})"
    )


def _utc(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
