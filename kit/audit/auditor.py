"""The auditor's home and incremental reconciliation (FORMAT.md 14.3).

An auditor home pins a trust root and holds an SQLite database of evidence
(:mod:`kit.storage.audit`). Each input, a ledger export or a receipt batch,
is authenticated and stored once, keyed by its SHA-256; statuses and
exceptions are then recomputed from everything held. Only signed content is
evidence: file names, times and order are never read as such.

Receipts need not each be signature-checked: a batch's signed checkpoint
names the hash of its newest receipt, and every receipt names the hash of
the one before, so walking the links back from the checkpoint's head
authenticates every receipt reached. Receipts the walk does not reach are
checked one by one against the host's key.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

import msgpack

from kit import encoding
from kit.audit.codes import CODES, COMPLETENESS, INTEGRITY, SEVERITIES, USE
from kit.crypto.sign import SIG_LEN
from kit.errors import (
    FormatError,
    HomeError,
    KitError,
    MediaError,
    UnauthenticatedError,
)
from kit.formats import ledger_export as lx
from kit.formats import manifest
from kit.formats import receipt as rfmt
from kit.formats.envelope import MAX_SIGNATURES, parse_envelope_uniform
from kit.formats.trustroot import TrustRoot, load_trust_root
from kit.fsutil import atomic_write, check_not_writable_by_others, read_regular
from kit.home import new_home, require_kind
from kit.media import FILE_CAP
from kit.storage.audit import AuditStore

ROOT_FILE = "trust-root.kit"
DB_FILE = "audit.db"
# Inputs are committed in groups of about this many bytes (each input still
# all or nothing): a crash loses at most the group being written, and those
# inputs, not yet known by their digests, are simply ingested again.
GROUP_BYTES = 256 << 20
# A run adding at least this many receipts and issuances, and at least as
# many as the store held before, drops their secondary indexes and builds
# them again once at the end: one sort instead of a random insert per row.
DEFER_INDEX = 20_000
# Host-reported refusals of input that could not be authenticated.
Progress = Callable[[str, int], None]


def init_auditor(home: Path, root_bytes: bytes) -> TrustRoot:
    """Create an auditor home pinning ``root_bytes`` (a self-signed trust
    root; compare its fingerprint out of band)."""
    root = load_trust_root(root_bytes)
    with new_home(home, "auditor"):
        atomic_write(home / ROOT_FILE, root_bytes, 0o600)
        store = AuditStore(home / DB_FILE)
        try:
            store.put_meta("trust_root_sha256", root.digest)
        finally:
            store.close()
    return root


@dataclass(frozen=True)
class Input:
    source: str  # where it was read from: a pointer for people, not evidence
    data: bytes
    digest: bytes = b""  # SHA-256 of data when already computed, else b""


@dataclass
class Summary:
    counts: dict[str, int]
    statuses: dict[str, int]
    exceptions: list[tuple[str, str, int]]  # (code, severity, count), worst first
    verdicts: dict[str, str]
    now: int
    leeway: int
    new_inputs: int = 0
    skipped_inputs: int = 0

    @property
    def clean(self) -> bool:
        return all(sev == "info" for _, sev, _ in self.exceptions)


@dataclass
class _Run:
    new: int = 0
    skipped: int = 0
    receipts: int = 0
    keys: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    added: int = 0  # receipts and issuances
    defer_at: int = 0  # rows added past which the indexes are deferred
    deferred: bool = False


class Auditor:
    """An opened auditor home."""

    def __init__(self, home: Path) -> None:
        require_kind(home, "auditor")
        # No secret here, but the folder, the pinned root and the evidence
        # decide every verdict: as in a signer home, only its owner may write.
        for p in (home, home / ROOT_FILE, home / DB_FILE):
            check_not_writable_by_others(p)
        if os.path.lexists(home / f"{DB_FILE}-wal"):  # holds recent commits
            check_not_writable_by_others(home / f"{DB_FILE}-wal")
        self.home = home
        self.root = load_trust_root(
            read_regular(home / ROOT_FILE, 1 << 16, "trust root")
        )
        self.store = AuditStore(home / DB_FILE)
        if self.store.get_meta("trust_root_sha256") != self.root.digest:
            self.store.close()
            raise HomeError(
                f"{home / ROOT_FILE} is not the trust root this auditor home "
                "pinned at init; refusing"
            )
        self._run = _Run()

    def close(self) -> None:
        self.store.close()

    # -- ingestion -----------------------------------------------------------

    def ingest(
        self, inputs: Iterator[Input], now: int, progress: Progress | None = None
    ) -> None:
        """Store each input once. Ledger exports are taken as they come;
        batches from hosts no export has enrolled yet are held and retried
        after every later export."""
        run = self._run = _Run()
        run.keys = self.store.host_keys()
        run.defer_at = max(DEFER_INDEX, self.store.row_count())
        with self.store.transaction():
            grouped = 0
            for item in inputs:
                self._ingest_one(item, now)
                grouped += len(item.data)
                if grouped >= GROUP_BYTES:
                    self.store.commit_point()
                    grouped = 0
                if progress is not None:
                    progress(item.source, run.receipts)
            self._retry_pending()
            if run.deferred:
                self.store.build_indexes()

    def _ingest_one(self, item: Input, now: int) -> None:
        digest = item.digest or hashlib.sha256(item.data).digest()
        if self.store.input_outcome(digest) is not None:
            self._run.skipped += 1  # the same bytes again change nothing
            return
        kind = route(item.data)
        with self.store.transaction():
            input_id = self.store.add_input(
                digest, kind, item.source, len(item.data), now
            )
            if kind == "ledger-export":
                outcome = self._ingest_export(item.data, input_id)
            elif kind == "receipt-batch":
                outcome = self._ingest_batch(item.data, input_id)
            else:
                # Only the label identifies an input, never its file name: a
                # known kit object that is not evidence is noted, anything
                # else (a damaged batch or export among them) is malformed.
                what = _OTHER_OBJECTS.get(kind)
                if what is not None:
                    self.store.finding(
                        "not-evidence",
                        f"{what}, not a receipt batch nor a ledger export; "
                        "not read as evidence",
                        input_id,
                    )
                    outcome = "not-evidence"
                else:
                    self.store.finding(
                        "malformed-input",
                        "neither a receipt batch nor a ledger export: its "
                        "leading label is not one of kit's (a damaged or "
                        "foreign file)",
                        input_id,
                    )
                    outcome = "malformed"
            self.store.set_outcome(input_id, outcome)
        self._run.new += 1

    def _retry_pending(self) -> None:
        for input_id in self.store.pending():
            data, _ = self.store.pending_data(input_id)
            with self.store.transaction():
                outcome = self._ingest_batch(data, input_id)
                if outcome != "pending":
                    self.store.drop_pending(input_id)
                    self.store.set_outcome(input_id, outcome)

    def _ingest_export(self, data: bytes, input_id: int) -> str:
        try:
            ex = lx.open_export(
                data, self.root.keys_for("issuer"), self.root.thresholds["issuer"]
            )
        except UnauthenticatedError:
            self.store.finding(
                "ledger-bad-signature",
                "a ledger export no issuer key of the pinned trust root signed "
                "(forged, damaged, or signed after a key rotation this home has "
                "not pinned)",
                input_id,
            )
            return "rejected"
        except FormatError as exc:
            self.store.finding("malformed-input", str(exc), input_id)
            return "malformed"
        if ex.signer != self.root.name:
            self.store.finding(
                "ledger-bad-signature",
                f"a ledger export names signer {ex.signer!r}, not {self.root.name!r} "
                "(the pinned trust root's name); refused",
                input_id,
            )
            return "rejected"
        known = self.store.export_digest(ex.seq)
        if known is not None and known != ex.digest:
            self.store.finding(
                "ledger-fork",
                f"two different ledger exports are numbered {ex.seq}",
                input_id,
                seq=ex.seq,
            )
        elif known is None:
            self.store.add_export(
                ex.seq,
                ex.digest,
                ex.prev,
                ex.time,
                (ex.first_lseq, ex.last_lseq),
                input_id,
            )
        self.store.add_hosts(
            (h.name, h.env, _kid(h.receipt_key), h.receipt_key, h.enrolled_at)
            for h in ex.hosts
        )
        tail = (input_id,)
        self._grow(len(ex.issuances))
        self.store.add_issuances(_ISSUANCE_ROW(i) + tail for i in ex.issuances)
        self.store.add_revocations(
            (r.kind, r.value, r.added_at) for r in ex.revocations
        )
        self._run.keys = self.store.host_keys()
        return "fork" if known is not None and known != ex.digest else "ingested"

    def _ingest_batch(self, data: bytes, input_id: int) -> str:
        try:
            raws, cp_raw = rfmt.split_batch(data)
        except FormatError as exc:
            self.store.finding("malformed-input", str(exc), input_id)
            return "malformed"
        if not cp_raw:
            if not self._signers_known(raws):
                self.store.add_pending(input_id, data)
                return "pending"
            self._loose(raws, input_id)
            return "ingested"
        try:
            env = parse_envelope_uniform(
                cp_raw, label=rfmt.CHECKPOINT_LABEL, cap=rfmt.CAP, what="checkpoint"
            )
        except FormatError as exc:
            self.store.finding("malformed-input", str(exc), input_id)
            return "malformed"
        owner = next(
            (self._run.keys[k] for k, _ in env.signatures if k in self._run.keys), None
        )
        if owner is None:
            self.store.add_pending(input_id, data)
            return "pending"
        host, pub = owner
        try:
            cp, _ = rfmt.open_checkpoint(cp_raw, {_kid(pub): pub})
            if cp.host != host:
                raise UnauthenticatedError("checkpoint")
        except KitError:
            self.store.finding(
                "bad-signature",
                f"the batch's checkpoint does not verify under the receipt key of "
                f"{host}, or names another host; its receipts are checked one by one",
                input_id,
                host=host,
            )
            self._loose(raws, input_id)
            return "ingested"
        self.store.add_checkpoint(
            env.digest, host, cp.first_seq, cp.seq, cp.head, cp.time, input_id
        )
        first, rows = self._chained(raws, host, cp, input_id)
        if len(rows) == len(raws):
            # Every receipt reached from the head, each one seq below the
            # next in the file: in order by construction.
            self._store(host, rows, input_id, consecutive=True)
            return "ingested"
        by_index = dict(enumerate(rows, first))
        forged = []
        keys = {_kid(pub): pub}
        for index, raw in enumerate(raws):
            if index in by_index:
                continue
            try:
                sr = rfmt.open_receipt(raw, keys)
                if sr.receipt.host != host:
                    raise UnauthenticatedError("receipt")
            except KitError:
                forged.append(index + 1)
                continue
            by_index[index] = _row(sr.receipt, sr.digest, input_id)
        if forged:
            self._forged(host, forged, input_id)
        ordered = sorted(by_index.items())
        self._check_order(host, ordered, input_id)
        self._store(host, [row for _, row in ordered], input_id)
        return "ingested"

    def _chained(
        self, raws: list[bytes], host: str, cp: rfmt.Checkpoint, input_id: int
    ) -> tuple[int, list[tuple[Any, ...]]]:
        """The rows of the receipts authenticated by hash links back from
        the checkpoint's head (FORMAT.md 14.2), a run of consecutive items
        of the batch, and the position of the first: in file order, which
        is seq order."""
        hashes = [hashlib.sha256(r).digest() for r in raws]
        index = next(
            (i for i in range(len(raws) - 1, -1, -1) if hashes[i] == cp.head), None
        )
        if index is None:
            return 0, []
        read = _FastReader(host).read
        out: list[tuple[Any, ...]] = []
        first, want_seq = index + 1, cp.seq
        while True:
            got = read(raws[index])
            if got is None or got[0] != want_seq:
                break  # its own signature check decides
            seq, prev, t, event, bundle_id, task, reason = got
            out.append(
                (host, seq, hashes[index], prev, t, event, bundle_id, task,
                 reason, input_id)
            )  # fmt: skip
            first = index
            if index == 0 or hashes[index - 1] != prev:
                break
            index, want_seq = index - 1, want_seq - 1
        out.reverse()
        return first, out

    def _signers_known(self, raws: list[bytes]) -> bool:
        """Whether every receipt of a batch with no checkpoint names a
        signing key some ledger export held enrolls. Until then the batch is
        held (like a checkpointed batch waiting for its host), not judged:
        a receipt can only be called forged once its key is known. Items that
        are not receipt envelopes at all are judged at once."""
        for raw in raws:
            try:
                env = parse_envelope_uniform(
                    raw, label=rfmt.LABEL, cap=rfmt.CAP, what="receipt"
                )
            except FormatError:
                continue
            if not any(k in self._run.keys for k, _ in env.signatures):
                return False
        return True

    def _loose(self, raws: list[bytes], input_id: int) -> None:
        """Receipts with no usable checkpoint: each must carry a valid
        signature by the key of an enrolled host."""
        by_host: dict[str, list[tuple[int, tuple[Any, ...]]]] = {}
        forged: list[int] = []
        for index, raw in enumerate(raws):
            try:
                env = parse_envelope_uniform(
                    raw, label=rfmt.LABEL, cap=rfmt.CAP, what="receipt"
                )
                owner = next(
                    (
                        self._run.keys[k]
                        for k, _ in env.signatures
                        if k in self._run.keys
                    ),
                    None,
                )
                if owner is None:
                    raise UnauthenticatedError("receipt")
                sr = rfmt.open_receipt(raw, {_kid(owner[1]): owner[1]})
                if sr.receipt.host != owner[0]:
                    raise UnauthenticatedError("receipt")
            except KitError:
                forged.append(index + 1)
                continue
            by_host.setdefault(owner[0], []).append(
                (index, _row(sr.receipt, sr.digest, input_id))
            )
        if forged:
            self._forged("", forged, input_id)
        for host, rows in sorted(by_host.items()):
            self._check_order(host, rows, input_id)
            self._store(host, [row for _, row in rows], input_id)

    def _check_order(
        self, host: str, rows: list[tuple[int, tuple[Any, ...]]], input_id: int
    ) -> None:
        """FORMAT.md 8.2: a batch carries its receipts in increasing seq
        order, and ``kit receipts export`` always writes them so. Receipts
        are placed by their signed seq and links whatever their place in the
        file, so a shuffle changes no conclusion; but it shows the file was
        rearranged after export, which the auditor is told (once per batch
        and host, at the first receipt out of place)."""
        for (i, before), (j, row) in pairwise(rows):
            if int(row[1]) < int(before[1]):
                self.store.finding(
                    "batch-out-of-order",
                    f"receipt {row[1]} of host {host} is item {j + 1} of the "
                    f"batch, after receipt {before[1]} (item {i + 1}): the file "
                    "was rearranged after export; each receipt was still placed "
                    "by its signed seq",
                    input_id,
                    host=host,
                    seq=int(row[1]),
                )
                return

    def _forged(self, host: str, positions: list[int], input_id: int) -> None:
        shown = ", ".join(map(str, positions[:10])) + (
            " ..." if len(positions) > 10 else ""
        )
        whose = f"host {host}" if host else "any host of the ledger exports"
        self.store.finding(
            "bad-signature",
            f"{len(positions)} item(s) of the batch are not receipts signed by "
            f"{whose} (item {shown}); they were not counted",
            input_id,
            host=host,
        )

    def _store(
        self,
        host: str,
        rows: list[tuple[Any, ...]],
        input_id: int,
        consecutive: bool = False,
    ) -> None:
        """Add a batch's authentic receipts of ``host``, each (host, seq) once:
        one already held is a duplicate, or a fork if its hash differs.
        ``consecutive``: the rows are known to be in strictly increasing seq
        order, so when none of their range is held they go in as they are."""
        if not rows:
            return
        if not consecutive:
            rows.sort(key=_SEQ)
        held = self.store.held(host, rows[0][1], rows[-1][1])
        if consecutive and not held:
            self._add(rows)
            return
        new: list[tuple[Any, ...]] = []
        dups: list[int] = []
        for row in rows:
            seq, digest = int(row[1]), bytes(row[2])
            known = held.get(seq)
            if known is None:
                held[seq] = digest
                new.append(row)
            elif known == digest:
                dups.append(seq)
            else:
                self.store.add_fork(host, seq, digest, input_id)
        self._add(new)
        if dups:
            self.store.finding(
                "duplicate-receipt",
                f"{len(dups)} receipt(s) of this batch were already held "
                f"(seq {dups[0]}..{dups[-1]}); counted once",
                input_id,
                host=host,
                seq=dups[0],
            )

    def _add(self, rows: list[tuple[Any, ...]]) -> None:
        self._grow(len(rows))
        self.store.add_receipts(rows)
        self._run.receipts += len(rows)

    def _grow(self, rows: int) -> None:
        """Count rows about to be added; past ``defer_at``, drop the
        secondary indexes until the end of the run."""
        run = self._run
        run.added += rows
        if not run.deferred and run.added >= run.defer_at:
            self.store.defer_indexes()
            run.deferred = True

    # -- decisions -----------------------------------------------------------

    def evaluate(self, now: int, leeway: int) -> Summary:
        self.store.evaluate(now, leeway)
        exceptions = [
            (code, SEVERITIES[sev], n) for code, sev, n in self.store.exception_counts()
        ]
        statuses = {s: 0 for s in _status_order()}
        statuses.update(self.store.status_counts())
        return Summary(
            counts=self.store.counts(),
            statuses=statuses,
            exceptions=exceptions,
            verdicts=_verdicts(exceptions, statuses),
            now=now,
            leeway=leeway,
            new_inputs=self._run.new,
            skipped_inputs=self._run.skipped,
        )


def _status_order() -> tuple[str, ...]:
    from kit.audit.codes import STATUSES

    return STATUSES


def _verdicts(
    exceptions: list[tuple[str, str, int]], statuses: dict[str, int]
) -> dict[str, str]:
    """integrity and use: "pass" or "fail"; completeness also "pending"
    while expired bundles wait for their host's receipts."""
    failing = {CODES[code].verdict for code, sev, _ in exceptions if sev != "info"}
    completeness = (
        "fail"
        if COMPLETENESS in failing
        else ("pending" if statuses.get("expired-unused") else "pass")
    )
    return {
        INTEGRITY: "fail" if INTEGRITY in failing else "pass",
        USE: "fail" if USE in failing else "pass",
        COMPLETENESS: completeness,
    }


def _kid(public_key: bytes) -> str:
    from kit.crypto.sign import key_id

    return key_id(public_key)


_RECEIPT_ORDER = tuple(sorted(rfmt.Receipt._fields, key=lambda k: k.encode()))
# The exact type of every receipt field, in that (canonical key) order.
_RECEIPT_TYPES = tuple(
    {
        "action": str, "approvals": list, "bundle_digest": bytes,
        "bundle_id": str, "command": list, "datasets": list, "delivery": str,
        "detail": str, "duration_ms": int, "event": str, "exit_status": int,
        "host": str, "prev": bytes, "reason": str, "seq": int, "task": str,
        "time": int, "use": int,
    }[k]
    for k in _RECEIPT_ORDER
)  # fmt: skip
_RECEIPT_KEYS = list(_RECEIPT_ORDER)
_MAP18 = b"\xde\x00\x12"  # map16 header, 18 entries
_ARRAY36 = b"\xdc\x00\x24"  # array16 header, 36 items
_TIME = (encoding.TIME_MIN, encoding.TIME_MAX - 1)
_SEQ = itemgetter(1)  # of a receipt row
_HEX32 = encoding.HEX32_RE.fullmatch
_REASON = rfmt.REASON_RE.fullmatch
_ARG = rfmt.RECEIPT_ARG_RE.fullmatch
_NAME = rfmt.RECEIPT_NAME_RE.fullmatch
_MAX_SEQ = rfmt.MAX_SEQ
_MAX_TASK = rfmt.MAX_TASK
_EVENTS = frozenset(rfmt.EVENTS)
_ACTIONS = frozenset(rfmt.ACTIONS)
# Fields of a receipt the auditor keeps, as read by the fast path: seq, prev,
# time, event, bundle_id, task, reason.
Fields = tuple[int, bytes, int, str, str, str, str]


class _FastReader:
    """Reads receipts authenticated by their hash links (FORMAT.md 14.2)
    against FORMAT.md 3 and 7.1 inline: a million of them must not cost a
    million field readers. It accepts exactly what :func:`rfmt.open_receipt`
    accepts, signatures aside; on anything else it gives None and the caller
    opens the receipt the slow way, with its signature, for a precise
    verdict. One reader per batch: it keeps a msgpack packer for the
    canonical-form checks."""

    def __init__(self, host: str) -> None:
        self.host = host  # a name already checked, from the checkpoint
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def read(self, raw: bytes) -> Fields | None:
        if len(raw) > rfmt.CAP:
            return None
        try:
            env = _unpackb(raw)
            if type(env) is not list or len(env) != 3:
                return None
            label, body, sigs = env
            if (
                type(label) is not str
                or label != rfmt.LABEL
                or type(body) is not bytes
                or not _signatures_ok(sigs)
                or self._pack(env) != raw
            ):
                return None
            # The body must be a map of the 18 receipt fields, whose
            # canonical header is map16 with 18 entries; read as an array of
            # its 36 keys and values (the same item bytes: msgpack items do
            # not depend on their container), it decodes several times
            # faster than as a map. Keys in canonical order, each once, and
            # each value of its exact type (a bool is not an int, nor a
            # float); then the bytes must be the canonical form of what was
            # read, which refuses any wider encoding.
            if body[:3] != _MAP18:
                return None
            flat = _ARRAY36 + body[3:]
            items = _unpackb(flat)
            if (
                type(items) is not list
                or len(items) != 36
                or items[0::2] != _RECEIPT_KEYS
                or tuple(map(type, values := items[1::2])) != _RECEIPT_TYPES
                or self._pack(items) != flat
            ):
                return None
        except Exception:  # noqa: BLE001 - any flaw: the strict reader decides
            return None
        (
            action, approvals, bundle_digest, bundle_id, command, datasets,
            delivery, detail, duration_ms, event, exit_status, host, prev,
            reason, seq, task, t, use,
        ) = values  # fmt: skip
        if not (
            host == self.host
            and 1 <= seq <= _MAX_SEQ
            and _TIME[0] <= t <= _TIME[1]
            and 0 <= use <= 1000
            and -255 <= exit_status <= 255
            and 0 <= duration_ms <= 1 << 40
            and len(prev) == 32
            and len(bundle_digest) == 32
            and len(task) <= _MAX_TASK
            and len(detail) <= 512
            and len(delivery) <= 16
            and event in _EVENTS
            and action in _ACTIONS
            and (event == "deny") == (reason != "")
        ):
            return None
        if (
            (reason and _REASON(reason) is None)
            or (bundle_id and _HEX32(bundle_id) is None)
            or (command and not _items_ok(command, _ARG, 32))
            or (datasets and not _items_ok(datasets, _NAME, 32))
            or (approvals and not _items_ok(approvals, _HEX32, 8))
        ):
            return None
        return seq, prev, t, event, bundle_id, task, reason


def _unpackb(data: bytes) -> Any:
    """msgpack's own decoder: extension types come back as objects no exact
    type check accepts, so they are refused with everything else."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


def _items_ok(items: list[Any], match: Callable[[str], Any], most: int) -> bool:
    if len(items) > most:
        return False
    for v in items:
        if type(v) is not str or match(v) is None:
            return False
    return True


def fast_receipt(raw: bytes, host: str) -> Fields | None:
    """The fields the auditor keeps of a receipt of ``host`` authenticated
    by its hash link, or None (see :class:`_FastReader`)."""
    return _FastReader(host).read(raw)


def _signatures_ok(sigs: Any) -> bool:
    """The envelope's signature list well formed (FORMAT.md 3), as
    :func:`parse_envelope` requires, though the hash link, not these
    signatures, authenticates the receipt: what the strict reader refuses,
    the fast one must refuse too."""
    if type(sigs) is not list or not 1 <= len(sigs) <= MAX_SIGNATURES:
        return False
    for item in sigs:
        if (
            type(item) is not list
            or len(item) != 2
            or type(item[0]) is not str
            or _HEX32(item[0]) is None
            or type(item[1]) is not bytes
            or len(item[1]) != SIG_LEN
        ):
            return False
    return True


def _row(r: rfmt.Receipt, digest: bytes, input_id: int) -> tuple[Any, ...]:
    return (
        r.host, r.seq, digest, r.prev, r.time, r.event, r.bundle_id, r.task,
        r.reason, input_id,
    )  # fmt: skip


# An issuance as a row of the issuances table, but for its input.
_ISSUANCE_ROW = attrgetter(
    "bundle_id", "lseq", "host", "env", "task", "identity", "owner", "issuer",
    "issued_at", "not_before", "expires_at", "max_uses", "claims_digest",
    "bundle_digest",
)  # fmt: skip

# Kit objects that are not evidence, by label: noted (info), never read.
_OTHER_OBJECTS = {
    "kit/bundle/v1": "a bundle",
    "kit/trust-root/v1": "a trust root",
    "kit/revocation/v1": "a revocation list",
    "kit/enrollment/v1": "an enrollment",
    "kit/public-key/v1": "a public key",
}


def route(data: bytes) -> str:
    """Which decoder an input goes to, from its leading label only (the
    decoder then checks everything): "receipt-batch", "ledger-export", the
    label of another kit object, or "other"."""
    if data[:1] == b"\x93":
        if data[1:].startswith(encoding.encode(rfmt.BATCH_LABEL)):
            return "receipt-batch"
        if data[1:].startswith(encoding.encode(lx.LABEL)):
            return "ledger-export"
        for label in _OTHER_OBJECTS:
            if data[1:].startswith(encoding.encode(label)):
                return label
    return "other"


# -- reading inputs ----------------------------------------------------------


def check_inputs(paths: list[Path]) -> list[tuple[str, Path, str]]:
    """Check every path before anything is read as evidence: folders must
    pass their SHA256SUMS manifest (FORMAT.md 10), every listed file is
    hashed, one at a time. Returns (source, file) pairs; raises MediaError
    naming the first problem, so a tampered folder is refused whole."""
    out: list[tuple[str, Path, str]] = []
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise MediaError(f"{path}: no such file or folder") from None
        if stat.S_ISLNK(st.st_mode):
            raise MediaError(f"{path}: is a symbolic link; refused")
        if stat.S_ISREG(st.st_mode):
            out.append((str(path), path, ""))
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise MediaError(f"{path}: not a regular file or folder")
        out.extend(
            (str(path / n), path / n, d) for n, d in _verified_folder(path).items()
        )
    return out


def _verified_folder(folder: Path) -> dict[str, str]:
    sums = folder / manifest.NAME
    if not os.path.lexists(sums):
        raise MediaError(f"{folder}: no {manifest.NAME} manifest; refused")
    try:
        entries = manifest.parse(read_regular(sums, manifest.CAP, "manifest"))
    except FormatError as exc:
        raise MediaError(f"{sums}: {exc}") from None
    for entry in os.scandir(folder):
        if entry.name == manifest.NAME:
            continue
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            raise MediaError(f"{entry.path}: not a regular file; refused")
        if entry.name not in entries:
            raise MediaError(f"{entry.path}: not listed in {manifest.NAME}; refused")
    for name, digest in sorted(entries.items()):
        got = hashlib.sha256(read_regular(folder / name, FILE_CAP, "media file"))
        if got.hexdigest() != digest:
            raise MediaError(
                f"{folder / name}: SHA-256 {got.hexdigest()[:16]}... does not match "
                f"the manifest's {digest[:16]}...; refused"
            )
    return entries


def read_inputs(files: list[tuple[str, Path, str]]) -> Iterator[Input]:
    """Yield inputs one at a time (memory holds one file), checking media
    files against their manifest digest again as they are read."""
    for source, path, digest in files:
        data = read_regular(path, FILE_CAP, "input file")
        got = hashlib.sha256(data).digest()
        if digest and got.hex() != digest:
            raise MediaError(f"{source}: changed while being read; refused")
        yield Input(source, data, got)
