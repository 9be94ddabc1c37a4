"""Reconcile receipt batches against the issuance ledger (FORMAT.md 7-8).

Only signed content is evidence: receipts are checked against the host's
enrolled receipt key, ordered by their sequence numbers and hash links, never
by file names or times. Identical receipts delivered twice count once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from kit.crypto.sign import key_id
from kit.errors import FormatError, KitError, UnauthenticatedError
from kit.formats import receipt as rfmt
from kit.formats.envelope import parse_envelope
from kit.host.policy import DEFAULT_LEEWAY
from kit.media import read_media
from kit.storage.base import HostRecord, IssuanceRecord

STATUSES = ("used", "denied", "unused-expired", "outstanding")


@dataclass(frozen=True)
class Anomaly:
    code: str
    message: str
    host: str = ""
    seq: int = 0
    bundle_id: str = ""
    source: str = ""


@dataclass
class BundleStatus:
    bundle_id: str
    host: str
    task: str
    owner: str
    max_uses: int
    expires_at: int
    status: str = "outstanding"
    uses: int = 0
    last_use: int = 0  # time of the newest release receipt, 0 if none
    approved_by: list[str] = field(default_factory=list)  # approver key ids
    denials: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Refusal:
    """A host refused input it could not authenticate: no bundle id to match."""

    host: str
    seq: int
    time: int
    reason: str
    digest: str  # prefix of the SHA-256 of the refused bytes


@dataclass
class Report:
    bundles: list[BundleStatus]
    anomalies: list[Anomaly]
    unauthenticated: list[Refusal]
    hosts: dict[str, int]  # host -> highest sequence number seen
    receipts: int
    # host -> (seq, hash) of the newest receipt of an unbroken chain from 1
    heads: dict[str, tuple[int, bytes]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.anomalies


@dataclass(frozen=True)
class Batch:
    source: str
    data: bytes


def _chain(
    host: str, by_seq: dict[int, rfmt.SignedReceipt], report: list[Anomaly]
) -> None:
    if not by_seq:
        return
    # Gaps from the sorted numbers actually held, never by walking 1..top: a
    # receipt claiming seq 2**62 must not cost 2**62 steps.
    held = sorted(by_seq)
    missing_runs = [
        (a + 1, b - 1) for a, b in zip([0, *held], held, strict=False) if b - a > 1
    ]
    if missing_runs:
        count = sum(hi - lo + 1 for lo, hi in missing_runs)
        first = missing_runs[0][0]
        report.append(
            Anomaly(
                "chain-gap",
                f"host {host}: {count} receipt(s) missing, first at seq {first}",
                host,
                first,
            )
        )
    for seq, r in sorted(by_seq.items()):
        prev = by_seq.get(seq - 1)
        expected = rfmt.GENESIS if seq == 1 else (prev.digest if prev else None)
        if expected is not None and r.receipt.prev != expected:
            report.append(
                Anomaly(
                    "chain-break",
                    f"host {host}: receipt {seq} does not link to receipt {seq - 1}",
                    host,
                    seq,
                )
            )


def _unauthenticated_checkpoint(
    raw: bytes, owners: dict[str, HostRecord], source: str
) -> Anomaly:
    """Classify a checkpoint no enrolled key verifies, by the key ids it lists
    (unauthenticated, so used for the wording only)."""
    env = parse_envelope(
        raw, label=rfmt.CHECKPOINT_LABEL, cap=rfmt.CAP, what="checkpoint"
    )
    named = [owners[kid].name for kid, _ in env.signatures if kid in owners]
    if named:
        return Anomaly(
            "bad-signature",
            f"the checkpoint's signature by the receipt key of {named[0]} does not "
            "verify (forged or damaged)",
            named[0],
            source=source,
        )
    return Anomaly(
        "unknown-host",
        "the checkpoint is signed by a key that belongs to no enrolled host",
        source=source,
    )


def reconcile(
    batches: list[Batch],
    hosts: list[HostRecord],
    bundles: list[IssuanceRecord],
    *,
    now: int,
    leeway: int = DEFAULT_LEEWAY,
) -> Report:
    anomalies: list[Anomaly] = []
    owners = {key_id(h.receipt_public): h for h in hosts}
    receipt_keys = {kid: h.receipt_public for kid, h in owners.items()}
    chains: dict[str, dict[int, rfmt.SignedReceipt]] = defaultdict(dict)
    checkpoints: list[tuple[str, rfmt.Checkpoint]] = []

    # 1. authenticate every checkpoint and receipt by its signing key; only
    #    then is anything inside it read
    for batch in batches:
        try:
            raws, cp_raw = rfmt.split_batch(batch.data)
            cp, signers = rfmt.open_checkpoint(cp_raw, receipt_keys)
        except FormatError as exc:
            anomalies.append(Anomaly("malformed-batch", str(exc), source=batch.source))
            continue
        except UnauthenticatedError:
            anomalies.append(_unauthenticated_checkpoint(cp_raw, owners, batch.source))
            continue
        signer = min(signers)
        host = owners[signer].name
        if cp.host != host:
            anomalies.append(
                Anomaly(
                    "bad-signature",
                    f"a checkpoint naming host {cp.host} is signed by the key of "
                    f"{host}",
                    host,
                    cp.seq,
                    source=batch.source,
                )
            )
            continue
        checkpoints.append((batch.source, cp))
        trusted = {signer: receipt_keys[signer]}
        carried: list[int] = []
        forged: list[int] = []
        for index, raw in enumerate(raws):
            try:
                sr = rfmt.open_receipt(raw, trusted)
                if sr.receipt.host != host:
                    raise UnauthenticatedError("receipt")
            except KitError:
                forged.append(index + 1)
                continue
            r = sr.receipt
            carried.append(r.seq)
            known = chains[cp.host].get(r.seq)
            if known is not None and known.digest != sr.digest:
                anomalies.append(
                    Anomaly(
                        "chain-fork",
                        f"host {cp.host}: two different receipts carry seq {r.seq}",
                        cp.host,
                        r.seq,
                        source=batch.source,
                    )
                )
                continue
            chains[cp.host][r.seq] = sr
        if forged:
            shown = ", ".join(map(str, forged[:10])) + (
                " ..." if len(forged) > 10 else ""
            )
            anomalies.append(
                Anomaly(
                    "bad-signature",
                    f"{len(forged)} item(s) of a batch from host {host} are not "
                    f"receipts signed by that host (item {shown})",
                    host,
                    source=batch.source,
                )
            )
        expected = cp.seq - cp.first_seq + 1
        if (
            len(carried) != expected
            or len(set(carried)) != expected
            or (carried and (min(carried) != cp.first_seq or max(carried) != cp.seq))
        ):
            anomalies.append(
                Anomaly(
                    "batch-incomplete",
                    f"host {host}: the checkpoint covers receipts "
                    f"{cp.first_seq}..{cp.seq}, the batch carries "
                    f"{len(carried)} authentic receipt(s) that do not match that "
                    "range",
                    host,
                    cp.seq,
                    source=batch.source,
                )
            )
        late = next(
            (n for n in range(1, len(carried)) if carried[n] < carried[n - 1]), None
        )
        if late is not None:
            # FORMAT.md 8.2: increasing seq order, as kit always writes. The
            # receipts prove the same in any order, but the file was changed.
            anomalies.append(
                Anomaly(
                    "batch-out-of-order",
                    f"host {host}: the batch carries receipt {carried[late]} "
                    f"after receipt {carried[late - 1]}; it was rearranged after "
                    "export",
                    host,
                    carried[late],
                    source=batch.source,
                )
            )

    # 2. chain continuity and checkpoints
    for host, by_seq in sorted(chains.items()):
        _chain(host, by_seq, anomalies)
    for source, cp in checkpoints:
        got = chains[cp.host].get(cp.seq)
        if got is None or got.digest != cp.head:
            anomalies.append(
                Anomaly(
                    "checkpoint-mismatch",
                    f"host {cp.host}: the "
                    f"checkpoint names receipt {cp.seq} as head, but "
                    "the delivered receipts do not match it",
                    cp.host,
                    cp.seq,
                    source=source,
                )
            )

    # 3. match receipts to issuances
    unmatched: list[Refusal] = []
    ledger = {b.bundle_id: b for b in bundles}
    status = {
        b.bundle_id: BundleStatus(
            b.bundle_id, b.host, b.task, b.owner, b.max_uses, b.expires_at
        )
        for b in bundles
    }
    for host, by_seq in sorted(chains.items()):
        for seq, sr in sorted(by_seq.items()):
            r = sr.receipt
            if not r.bundle_id:
                # A refusal before authentication (forged, damaged, unreadable
                # input): no issuance to match, but the auditor sees it.
                unmatched.append(
                    Refusal(host, seq, r.time, r.reason, r.bundle_digest.hex()[:16])
                )
                continue
            issued = ledger.get(r.bundle_id)
            if issued is None:
                anomalies.append(
                    Anomaly(
                        "unknown-bundle",
                        f"host {host} reports "
                        f"bundle {r.bundle_id}, which was never issued",
                        host,
                        seq,
                        r.bundle_id,
                    )
                )
                continue
            st = status[r.bundle_id]
            if r.event == "deny":
                st.denials.append(f"{r.reason} (host {host} seq {seq})")
                continue
            if r.event != "release":
                continue
            st.uses += 1
            st.last_use = max(st.last_use, r.time)
            st.approved_by = sorted({*st.approved_by, *r.approvals})
            if host != issued.host:
                anomalies.append(
                    Anomaly(
                        "host-mismatch",
                        f"bundle {r.bundle_id} for "
                        f"{issued.host} was released on {host}",
                        host,
                        seq,
                        r.bundle_id,
                    )
                )
            if r.task != issued.task:
                anomalies.append(
                    Anomaly(
                        "task-mismatch",
                        f"bundle {r.bundle_id} for "
                        f"task {issued.task} released for {r.task}",
                        host,
                        seq,
                        r.bundle_id,
                    )
                )
            if not issued.not_before - leeway <= r.time <= issued.expires_at + leeway:
                anomalies.append(
                    Anomaly(
                        "use-outside-validity",
                        f"bundle "
                        f"{r.bundle_id} released at {r.time}, valid "
                        f"{issued.not_before}..{issued.expires_at}",
                        host,
                        seq,
                        r.bundle_id,
                    )
                )
            if st.uses > issued.max_uses:
                anomalies.append(
                    Anomaly(
                        "overuse",
                        f"bundle {r.bundle_id} released "
                        f"{st.uses} times, max {issued.max_uses}",
                        host,
                        seq,
                        r.bundle_id,
                    )
                )

    for st in status.values():
        if st.uses:
            st.status = "used"
        elif st.denials:
            st.status = "denied"
        elif now > st.expires_at + leeway:
            st.status = "unused-expired"
    return Report(
        bundles=list(status.values()),
        anomalies=anomalies,
        unauthenticated=unmatched,
        hosts={h: max(c) for h, c in chains.items() if c},
        receipts=sum(len(c) for c in chains.values()),
        heads={h: _head(c) for h, c in chains.items() if 1 in c},
    )


def _head(by_seq: dict[int, rfmt.SignedReceipt]) -> tuple[int, bytes]:
    """The newest receipt reachable from 1 by unbroken links."""
    seq = 1
    while seq + 1 in by_seq and by_seq[seq + 1].receipt.prev == by_seq[seq].digest:
        seq += 1
    return seq, by_seq[seq].digest


def load_batches(folders: list[Path]) -> list[Batch]:
    """Read every receipt batch from media folders (manifests checked)."""
    out: list[Batch] = []
    for folder in folders:
        for name, data in sorted(read_media(folder).items()):
            if name.startswith("receipts-"):
                out.append(Batch(str(folder / name), data))
    return out
