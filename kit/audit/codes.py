"""The auditor's vocabulary in one place: bundle statuses, exception codes,
their severities and the verdict each one affects (docs/auditor.md, FORMAT.md
14). Codes are stable: scripts match on them; new ones may be added, none is
renamed or given another meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

# Severities, worst first. Exceptions of severity "info" do not make a
# reconciliation unclean; every other severity does.
SEVERITIES = ("critical", "high", "medium", "low", "info")

# Per-bundle statuses, in the order they are decided (the first that applies
# wins) and shown.
STATUSES = (
    "used",  # at least one release receipt
    "revoked",  # no release; a revocation entry names it
    "denied",  # no release; at least one denial receipt names it
    "unaccounted",  # expired; the host's whole chain covers its lifetime; no trace
    "expired-unused",  # expired, no trace, the host's receipts do not cover it yet
    "outstanding",  # still valid, no receipt yet
)

INTEGRITY = "integrity"  # is the evidence authentic and whole?
COMPLETENESS = "completeness"  # is every issuance accounted for?
USE = "use"  # was each credential used only as allowed?


@dataclass(frozen=True)
class Code:
    code: str
    severity: str
    verdict: str
    meaning: str


CODES: dict[str, Code] = {
    c.code: c
    for c in (
        # -- the evidence itself (integrity)
        Code("bad-signature", "critical", INTEGRITY, "a checkpoint or receipt "
             "that does not verify under the host's enrolled receipt key"),
        Code("chain-fork", "critical", INTEGRITY,
             "two different receipts carry one host and sequence number"),
        Code("chain-break", "critical", INTEGRITY,
             "a receipt does not link to the receipt before it"),
        Code("checkpoint-mismatch", "critical", INTEGRITY, "the receipt at a "
             "checkpoint's head differs from the one the checkpoint names"),
        Code("ledger-bad-signature", "critical", INTEGRITY, "a ledger export not "
             "signed by an issuer key of the pinned trust root"),
        Code("ledger-fork", "critical", INTEGRITY,
             "two different ledger exports carry one export number"),
        Code("ledger-gap", "critical", INTEGRITY, "a ledger export, or an "
             "issuance inside one, is missing: something was removed"),
        Code("chain-gap", "high", INTEGRITY,
             "receipts missing between 1 and the highest sequence number held"),
        Code("truncated-tail", "high", INTEGRITY, "a checkpoint covers more "
             "receipts than were delivered"),
        Code("malformed-input", "high", INTEGRITY,
             "an input file that does not decode as a batch or ledger export, "
             "whatever its name"),
        Code("unknown-host", "high", INTEGRITY, "a checkpoint or receipt signed "
             "by no host of the ledger exports"),
        Code("missing-checkpoint", "medium", INTEGRITY, "receipts that no signed "
             "checkpoint covers: a cut-off tail behind them would not show"),
        Code("clock-anomaly", "medium", INTEGRITY, "a host reported its clock "
             "behind its floor or a bundle from the future, or its receipt times "
             "run backwards"),
        Code("batch-out-of-order", "low", INTEGRITY, "a batch file whose "
             "receipts are not in ascending sequence order, as kit never writes "
             "them: the file was rearranged after export (each receipt is still "
             "placed by its signed seq, so no status changes)"),
        Code("duplicate-receipt", "info", INTEGRITY,
             "an identical receipt delivered again in another batch (counted once)"),
        Code("not-evidence", "info", INTEGRITY, "an input that is another kit "
             "object (a bundle, trust root, revocation list, enrollment or "
             "public key), recognised by its label; not read as evidence"),
        # -- each use against its issuance (use)
        Code("unknown-bundle", "high", USE,
             "a receipt names a bundle no ledger export lists"),
        Code("use-after-expiry", "high", USE,
             "a release after the bundle's expiry (beyond the leeway)"),
        Code("use-before-valid", "high", USE,
             "a release before the bundle's not-before (beyond the leeway)"),
        Code("overuse", "high", USE, "more releases than the bundle's max uses"),
        Code("host-mismatch", "high", USE,
             "a release on another host than the bundle was issued for"),
        Code("env-mismatch", "high", USE, "a release on a host enrolled for "
             "another environment than the bundle's"),
        Code("task-mismatch", "high", USE,
             "a release for another task than the bundle's"),
        Code("use-after-revocation", "medium", USE, "a release later than a "
             "revocation entry naming the bundle was added"),
        Code("refused-unauthenticated", "info", USE, "a host refused input it "
             "could not authenticate (no bundle to match; someone handed it a "
             "forged or damaged file)"),
        # -- every issuance accounted for (completeness)
        Code("unaccounted", "high", COMPLETENESS, "an expired bundle of which the "
             "host's complete receipts show no trace"),
    )
}  # fmt: skip


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def is_clean_severity(severity: str) -> bool:
    return severity == "info"
