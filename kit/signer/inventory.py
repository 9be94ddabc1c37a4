"""The inventory of workflow identities (issue 5): each declared identity, or
one that bundles were issued under, with what is outstanding, when it was last
seen used, and flags a security team acts on. Pure: the caller passes the
declarations, the ledger's records and the time."""

from __future__ import annotations

from dataclasses import dataclass, field

from kit.signer.identity import Identity, PolicyCheck
from kit.storage.base import IssuanceRecord

AD_HOC = "(ad hoc)"


@dataclass
class Outstanding:
    bundle_id: str
    host: str
    expires_at: int
    uses_left: int


@dataclass
class IdentityReport:
    name: str
    owner: str
    environment: str
    risk: str
    declared: bool
    retired: bool
    bundles: int = 0
    outstanding: list[Outstanding] = field(default_factory=list)
    last_use: int = 0  # from reconciled receipts; 0 when never seen used
    flags: list[str] = field(default_factory=list)


def rotation_due(
    ident: Identity, records: list[IssuanceRecord], now: int
) -> int | None:
    """How long (s) the identity's current secret has been issued past its
    rotation period, or None. The current secret is the newest bundle's; its
    age runs from the first bundle that carried the same keyed digest."""
    mine = sorted(
        (r for r in records if r.identity == ident.name), key=lambda r: r.issued_at
    )
    if not mine:
        return None
    current = mine[-1].secret_digest
    first = min(r.issued_at for r in mine if r.secret_digest == current)
    overdue = now - first - ident.rotation_period
    return overdue if overdue > 0 else None


def build_inventory(
    check: PolicyCheck,
    records: list[IssuanceRecord],
    usage: dict[str, tuple[int, int]],
    *,
    now: int,
    lifetime_cap: int,
    revoked: frozenset[str] = frozenset(),
) -> list[IdentityReport]:
    """``revoked``: identity names retired with kit retire / kit revoke."""
    declared = {i.name: i for i in check.identities}
    reports: dict[str, IdentityReport] = {}
    for ident in declared.values():
        reports[ident.name] = IdentityReport(
            ident.name,
            ident.owner,
            ident.environment,
            ident.risk,
            True,
            ident.is_retired(now),
        )
    for rec in records:
        name = rec.identity or AD_HOC
        rep = reports.get(name)
        if rep is None:  # issued under a declaration since deleted, or ad hoc
            rep = reports[name] = IdentityReport(
                name, rec.owner, rec.env, rec.risk, False, name != AD_HOC
            )
        rep.bundles += 1
        uses, last = usage.get(rec.bundle_id, (0, 0))
        rep.last_use = max(rep.last_use, last)
        if rec.expires_at >= now and uses < rec.max_uses:
            rep.outstanding.append(
                Outstanding(
                    rec.bundle_id, rec.host, rec.expires_at, rec.max_uses - uses
                )
            )
    for rep in reports.values():
        decl = declared.get(rep.name)
        if rep.name == AD_HOC:
            rep.flags.append("ad-hoc: bundles issued under no declared identity")
        elif decl is None:
            rep.flags.append("declaration deleted: treated as retired")
        if rep.name in revoked:
            rep.retired = True
            rep.flags.append("retired: revoked by kit retire or kit revoke")
        if rep.retired and rep.outstanding:
            rep.flags.append(
                f"retired but {len(rep.outstanding)} bundle(s) outstanding"
            )
        if decl is not None and decl.is_retired(now):
            rep.flags.append(f"past its retirement date {decl.retire_on}")
        if rep.last_use == 0:
            rep.flags.append("never used (no reconciled release)")
        if not rep.owner:
            rep.flags.append("no owner")
        if decl is not None and decl.max_lifetime > lifetime_cap:
            rep.flags.append(
                f"max_lifetime {decl.max_lifetime} s above the {lifetime_cap} s cap"
            )
        if decl is not None:
            overdue = rotation_due(decl, records, now)
            if overdue is not None:
                rep.flags.append(f"secret due for rotation ({overdue} s overdue)")
    return sorted(reports.values(), key=lambda r: r.name)
