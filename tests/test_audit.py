"""The auditor's reconciliation (issue 7): ledger exports, an auditor home,
incremental reconciliation across trips, and the reports.

Every fixture is made by real flows: the signer issues and exports its
ledger through ``kit ledger export``, real hosts authorize bundles and export
their journals; a tampered host is a real host journal with receipts the
host's own key signed but its checks would never have written.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CHILD, DAY, HOSTS, T0, TASK, World, child_argv

from kit.audit.auditor import Auditor, Input, init_auditor
from kit.audit.codes import CODES, SEVERITIES, STATUSES
from kit.audit.report import iso, neutralise, write_csv
from kit.errors import DeniedError, FormatError, HomeError, UnauthenticatedError
from kit.formats import ledger_export as lx
from kit.formats import receipt as rfmt
from kit.host.host import Host, init_host
from kit.media import write_media
from kit.signer.signer import ROOT_FILE
from kit.storage.sqlite import SqliteLedger

ROOT = Path(__file__).resolve().parent.parent


# -- helpers ---------------------------------------------------------------------


class Audit:
    """An auditor home next to a World, driven through the real CLI."""

    def __init__(self, world: World, tmp: Path) -> None:
        self.w = world
        self.tmp = tmp
        self.home = tmp / "audit"
        self.trips = 0
        done = world.kit(
            "audit",
            "init",
            "--trust",
            world.signer_home / ROOT_FILE,
            "--home",
            self.home,
        )
        assert done.returncode == 0, done.stderr

    def ledger(self) -> Path:
        """``kit ledger export`` to a fresh folder."""
        self.trips += 1
        folder = self.tmp / f"ledger-{self.trips}"
        self.w.close()  # the CLI opens the signer home itself
        self.w._signer = None
        done = self.w.kit(
            "ledger", "export", "--to", folder, "--home", self.w.signer_home
        )
        assert done.returncode == 0, done.stderr
        return folder

    def receipts(self, host: Host, now: int, **kw: Any) -> Path:
        self.trips += 1
        folder = self.tmp / f"trip-{self.trips}"
        assert host.export_receipts(folder, now, **kw) is not None
        return folder

    def reconcile(self, *inputs: Path | str, extra: tuple[str, ...] = ()) -> Result:
        done = self.w.kit(
            "reconcile", "--home", self.home, "--json", *extra, *map(str, inputs)
        )
        assert done.returncode in (0, 1), done.stderr
        return Result(done)


class Result:
    def __init__(self, done: subprocess.CompletedProcess[bytes]) -> None:
        self.code = done.returncode
        self.data: dict[str, Any] = json.loads(done.stdout)
        self.stderr = done.stderr.decode()

    def codes(self) -> dict[str, int]:
        return {e["code"]: e["count"] for e in self.data["exception_counts"]}

    def exceptions(self, code: str) -> list[dict[str, Any]]:
        return [e for e in self.data["exceptions"] if e["code"] == code]

    def status(self, bundle_id: str) -> str:
        [b] = [b for b in self.data["bundles"] if b["bundle_id"] == bundle_id]
        return str(b["status"])


def summary_lines_of(audit: Audit, held: Path) -> list[str]:
    """The terminal summary of the auditor home, given an input it holds."""
    done = audit.w.kit("reconcile", "--home", audit.home, held)
    assert done.returncode in (0, 1), done.stderr
    text = (done.stdout + done.stderr).decode()
    return [line for line in text.splitlines() if "receipt(s) from" in line]


@pytest.fixture
def audit(world: World, tmp_path: Path) -> Audit:
    return Audit(world, tmp_path)


def _use(host: Host, data: bytes, out: Path, now: int = T0) -> None:
    release = host.authorize(data, task=TASK, command=child_argv(out), now=now)
    host.record_exit(release, status=0, duration_ms=1, now=now + 1)


def _tampered(host: Host, now: int, **fields: Any) -> None:
    """Append to the host's real journal a receipt its checks would never
    write (a host whose software was modified), signed by its own key."""
    values: dict[str, Any] = {
        "host": host.identity.name,
        "time": now,
        "event": "release",
        "action": "run",
        "bundle_id": "",
        "bundle_digest": bytes(32),
        "task": TASK,
        "command": CHILD,
        "reason": "",
        "detail": "",
        "use": 1,
        "exit_status": 0,
        "duration_ms": 0,
    }
    values.update(fields)

    def build(seq: int, prev: bytes, use: int) -> bytes:
        r = rfmt.Receipt(seq=seq, prev=prev, **values)
        return rfmt.sign_receipt(r, host._signing)

    host.state.append(build, 0)


def _rewrite(
    folder: Path, out: Path, change: Callable[[list[bytes], bytes], Any]
) -> Path:
    """Copy the one batch in ``folder`` to ``out`` with its receipts and
    checkpoint changed by ``change`` (returning (receipts, checkpoint))."""
    [batch] = folder.glob("receipts-*.kit")
    raws, cp = rfmt.split_batch(batch.read_bytes())
    raws, cp = change(raws, cp)
    write_media(out, {batch.name: rfmt.encode_batch(raws, cp)})
    return out


# -- ledger export ---------------------------------------------------------------


def test_ledger_export_has_claims_and_digests_never_secrets(
    world: World, audit: Audit
) -> None:
    issued = world.issue(max_uses=2)
    world.signer.revoke([("identity", "retired-one")], T0)
    folder = audit.ledger()
    [path] = folder.glob("ledger-export-*.kit")
    data = path.read_bytes()
    assert path.name == "ledger-export-0000000001.kit"
    assert issued.secret not in data
    rec = world.signer.ledger.get_bundle(issued.claims.bundle_id)
    assert rec is not None and rec.secret_digest not in data
    root = world.signer.root
    ex = lx.open_export(data, root.keys_for("issuer"), 1)
    assert (ex.seq, ex.prev, ex.first_lseq, ex.last_lseq) == (1, lx.GENESIS, 1, 1)
    assert {h.name for h in ex.hosts} == set(HOSTS)
    [item] = ex.issuances
    assert (item.bundle_id, item.max_uses, item.task) == (
        issued.claims.bundle_id,
        2,
        TASK,
    )
    assert [(r.kind, r.value) for r in ex.revocations] == [("identity", "retired-one")]
    # the next export follows this one and holds only what is new
    world.issue()
    [second] = audit.ledger().glob("ledger-export-*.kit")
    nxt = lx.open_export(second.read_bytes(), root.keys_for("issuer"), 1)
    assert (nxt.seq, nxt.prev, nxt.first_lseq, nxt.last_lseq) == (2, ex.digest, 2, 2)
    assert nxt.hosts == () and nxt.revocations == ()


def test_ledger_export_all_writes_earlier_exports_again(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    [one] = audit.ledger().glob("ledger-export-*.kit")
    world.issue()
    [two] = audit.ledger().glob("ledger-export-*.kit")
    world.close()
    world._signer = None
    done = world.kit(
        "ledger", "export", "--all", "--to", tmp_path / "again", "--home",
        world.signer_home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = sorted((tmp_path / "again").glob("ledger-export-*.kit"))
    assert [p.name for p in again] == [
        "ledger-export-0000000001.kit",
        "ledger-export-0000000002.kit",
        "ledger-export-0000000003.kit",
    ]
    assert again[0].read_bytes() == one.read_bytes()
    assert again[1].read_bytes() == two.read_bytes()


def test_database_failure_during_ledger_export_is_a_home_error(
    world: World, tmp_path: Path
) -> None:
    """SQLite failing inside the export's transaction (here a damaged page of
    the issuances) is the ledger's own error: exit 5 with SQLite's reason,
    no traceback, no export on the media and none recorded as prepared."""
    world.issue()
    world.issue()
    world.damage_ledger_table("bundles")
    ledger = world.signer_home / "ledger.db"
    usb = tmp_path / "usb"
    done = world.kit("ledger", "export", "--to", usb, "--home", world.signer_home)
    err = done.stderr.decode()
    assert done.returncode == 5, err
    assert f"kit: error: the issuance ledger {ledger} could not be read or " in err
    assert "malformed" in err
    assert "Traceback" not in err and "internal error" not in err
    assert not usb.exists() or not any(usb.glob("ledger-export-*"))
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        for query in (
            "SELECT count(*) FROM ledger_exports_prepared",
            "SELECT count(*) FROM ledger_exports",
        ):
            assert db.execute(query).fetchone() == (0,)
    finally:
        db.close()


def test_export_snapshot_rolls_back_and_names_a_database_error(
    tmp_path: Path,
) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        with (
            pytest.raises(HomeError, match=r"could not be read or written \(disk"),
            ledger.export_snapshot(),
        ):
            ledger.record_prepared(1, bytes(32), T0, (0, 0, 0), b"export")
            raise sqlite3.OperationalError("disk I/O error")
        assert ledger.prepared_exports() == []  # rolled back
        with ledger.export_snapshot():  # and usable again
            ledger.record_prepared(1, bytes(32), T0, (0, 0, 0), b"export")
        assert ledger.prepared_exports() == [(b"export", (0, 0, 0))]
    finally:
        ledger.close()


def test_ledger_export_signed_by_another_signer_is_refused(world: World) -> None:
    data, _ = world.attacker.ledger_exports(T0)[0]
    with pytest.raises(UnauthenticatedError):
        lx.open_export(data, world.signer.root.keys_for("issuer"), 1)


def test_ledger_export_needs_the_passphrase(world: World, tmp_path: Path) -> None:
    bad = tmp_path / "bad-pass"
    bad.write_bytes(b"wrong passphrase\n")
    bad.chmod(0o600)
    done = world.kit(
        "ledger", "export", "--to", tmp_path / "x", "--home", world.signer_home,
        passfile=bad,
    )  # fmt: skip
    assert done.returncode != 0
    assert not (tmp_path / "x").exists()


# -- statuses --------------------------------------------------------------------


def test_every_status_from_real_flows(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    used = world.issue(max_uses=2)
    denied = world.issue()
    revoked = world.issue()
    world.signer.revoke([("bundle", revoked.claims.bundle_id)], T0)
    unaccounted = world.issue(now=T0 - 2 * DAY, ttl=3600)  # build-01 reports later
    expired = world.issue("build-02", now=T0 - 2 * DAY, ttl=3600)  # no receipts
    outstanding = world.issue(ttl=DAY)
    ledger = audit.ledger()
    host = world.host()
    try:
        _use(host, used.data, tmp_path / "out")
        with pytest.raises(DeniedError):
            host.authorize(denied.data, task="other-task", command=CHILD, now=T0 + 2)
        with pytest.raises(UnauthenticatedError):  # matches nothing: info only
            host.check(
                world.issue(by=world.attacker).data, task=TASK, command=None, now=T0
            )
        trip = audit.receipts(host, T0 + 3)
    finally:
        host.close()
    res = audit.reconcile(ledger, trip)
    assert res.status(used.claims.bundle_id) == "used"
    assert res.status(denied.claims.bundle_id) == "denied"
    assert res.status(revoked.claims.bundle_id) == "revoked"
    assert res.status(unaccounted.claims.bundle_id) == "unaccounted"
    assert res.status(expired.claims.bundle_id) == "expired-unused"
    assert res.status(outstanding.claims.bundle_id) == "outstanding"
    [b] = [b for b in res.data["bundles"] if b["status"] == "used"]
    assert (b["uses"], b["max_uses"]) == (1, 2)
    assert res.data["statuses"] == {s: 1 for s in STATUSES}
    # the unaccounted bundle is the one finding; completeness fails, the
    # evidence itself is whole
    assert res.codes() == {"unaccounted": 1, "refused-unauthenticated": 1}
    [e] = res.exceptions("unaccounted")
    assert e["bundle_id"] == unaccounted.claims.bundle_id and e["severity"] == "high"
    assert res.data["verdicts"] == {
        "integrity": "pass",
        "use": "pass",
        "completeness": "fail",
    }
    assert res.code == 1
    assert res.data["version"] == 1


def test_clean_run_exits_0_and_writes_every_report(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    used = world.issue()
    ledger = audit.ledger()
    host = world.host()
    try:
        _use(host, used.data, tmp_path / "out")
        trip = audit.receipts(host, T0 + 3)
    finally:
        host.close()
    html, out = tmp_path / "report.html", tmp_path / "csv"
    res = audit.reconcile(ledger, trip, extra=("--html", str(html), "--csv", str(out)))
    assert res.code == 0 and res.data["clean"] is True
    assert set(res.data) == {
        "version", "now", "leeway", "clean", "verdicts", "counts", "statuses",
        "exception_counts", "inputs", "exceptions", "bundles",
    }  # fmt: skip
    assert res.data["verdicts"] == {
        s: "pass" for s in ("integrity", "use", "completeness")
    }
    page = html.read_text()
    assert used.claims.bundle_id not in page  # used within limits: not listed
    assert "build-01" in page and "<svg" in page
    for digest in (i["sha256"] for i in res.data["inputs"]):
        assert digest in page  # the input digests
    rows = list(csv.DictReader((out / "bundles.csv").open()))
    assert [(r["bundle_id"], r["status"], r["uses"]) for r in rows] == [
        (used.claims.bundle_id, "used", "1")
    ]
    # Times as ISO 8601 UTC, which a spreadsheet reads as dates.
    assert rows[0]["expires_at"] == iso(used.claims.expires_at)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows[0]["last_use"])
    assert list(csv.reader((out / "exceptions.csv").open())) == [
        [
            "code",
            "severity",
            "host",
            "seq",
            "bundle_id",
            "message",
            "file",
            "input_sha256",
        ]
    ]
    # the human summary, without --json
    done = audit.w.kit("reconcile", "--home", audit.home, ledger, trip)
    assert done.returncode == 0
    assert b"no exceptions" in done.stdout and b"used            1" in done.stdout


# -- trips, order, idempotence ---------------------------------------------------


def _three_trips(world: World, audit: Audit, tmp_path: Path) -> tuple[Path, list[Path]]:
    bundles = [world.issue() for _ in range(3)]
    ledger = audit.ledger()
    trips = []
    host = world.host()
    try:
        for n, issued in enumerate(bundles):
            _use(host, issued.data, tmp_path / f"out{n}", now=T0 + 10 * n)
            trips.append(audit.receipts(host, T0 + 10 * n + 5))
    finally:
        host.close()
    return ledger, trips


def test_three_trips_out_of_order_accumulate(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    ledger, (t1, t2, t3) = _three_trips(world, audit, tmp_path)
    first = audit.reconcile(t3, ledger)
    assert first.codes() == {"chain-gap": 1}
    [gap] = first.exceptions("chain-gap")
    assert (gap["host"], gap["seq"]) == ("build-01", 1)
    assert "receipts 1..4" in gap["message"]
    second = audit.reconcile(t1)
    assert [e["seq"] for e in second.exceptions("chain-gap")] == [3]
    third = audit.reconcile(t2)
    assert third.code == 0 and third.codes() == {}
    assert third.data["statuses"]["used"] == 3
    assert third.data["counts"]["receipts"] == 6
    # the same batches again change nothing
    again = audit.reconcile(t1, t2, t3, ledger)
    assert again.data["counts"] == third.data["counts"]
    assert again.data["exceptions"] == [] and again.code == 0
    done = audit.w.kit("reconcile", "--home", audit.home, t1, t2, t3, ledger)
    assert b"(0 new, 4 already held)" in done.stdout


def test_deleted_middle_batch_is_a_gap(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    ledger, (t1, _, t3) = _three_trips(world, audit, tmp_path)
    res = audit.reconcile(ledger, t1, t3)
    [gap] = res.exceptions("chain-gap")
    assert (gap["host"], gap["seq"], gap["severity"]) == ("build-01", 3, "high")
    assert "receipts 3..4 of host build-01 are missing" in gap["message"]
    assert gap["file"].endswith("receipts-build-01-0000000005-0000000006.kit")
    assert res.data["verdicts"]["integrity"] == "fail"
    assert res.code == 1


def test_file_names_and_times_are_not_evidence(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    ledger, trips = _three_trips(world, audit, tmp_path)
    # renamed, in one folder, in reverse name order, times scrambled
    mixed = tmp_path / "mixed"
    files = {}
    for n, trip in enumerate(trips):
        [batch] = trip.glob("receipts-*.kit")
        files[f"zz-{9 - n}.bin"] = batch.read_bytes()
    write_media(mixed, files)
    res = audit.reconcile(mixed, ledger)
    assert res.code == 0 and res.data["counts"]["receipts"] == 6


def test_batch_before_its_ledger_export_is_held_then_counted(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    issued = world.issue()
    host = world.host()
    try:
        _use(host, issued.data, tmp_path / "out")
        trip = audit.receipts(host, T0 + 3)
    finally:
        host.close()
    early = audit.reconcile(trip)
    assert early.codes() == {"unknown-host": 1}
    assert early.data["counts"]["receipts"] == 0
    ledger = audit.ledger()
    late = audit.reconcile(ledger)
    assert late.codes() == {} and late.status(issued.claims.bundle_id) == "used"
    # Hosts that reported, apart from those the exports enroll.
    counts = late.data["counts"]
    assert counts["reporting_hosts"] == 1 and counts["hosts"] == len(HOSTS)
    assert summary_lines_of(audit, ledger)[0].startswith(
        f"2 receipt(s) from 1 of {len(HOSTS)} enrolled host(s); "
    )


def test_duplicate_receipts_count_once(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    issued = world.issue(max_uses=2)
    ledger = audit.ledger()
    host = world.host()
    try:
        _use(host, issued.data, tmp_path / "a")
        first = audit.receipts(host, T0 + 3)
        _use(host, issued.data, tmp_path / "b", now=T0 + 5)
        again = audit.receipts(host, T0 + 9, from_seq=1)  # re-export, overlapping
    finally:
        host.close()
    res = audit.reconcile(ledger, first, again)
    assert res.codes() == {"duplicate-receipt": 1}
    [dup] = res.exceptions("duplicate-receipt")
    assert dup["severity"] == "info" and "2 receipt(s)" in dup["message"]
    assert res.data["bundles"][0]["uses"] == 2
    assert res.code == 0  # info only


# -- integrity ---------------------------------------------------------------------


def test_forged_receipt_is_not_counted(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    issued = world.issue(max_uses=3)
    ledger = audit.ledger()
    host = world.host()
    try:
        _use(host, issued.data, tmp_path / "a")
        trip = audit.receipts(host, T0 + 3)
        key = host._signing
    finally:
        host.close()
    from kit.crypto.sign import SigningKey

    forger = SigningKey.generate()

    def forge(raws: list[bytes], cp: bytes) -> tuple[list[bytes], bytes]:
        last = rfmt.parse_receipt(raws[-1])
        fake = last.receipt._replace(seq=3, prev=last.digest)
        forged = rfmt.sign_receipt(fake, forger)
        # the forger claims the host's key id on its signature
        env = rfmt.parse_receipt(forged).envelope
        relabelled = rfmt.encoding.encode(
            [env.label, env.body, [[key.key_id, env.signatures[0][1]]]]
        )
        return [*raws, relabelled], cp

    bad = _rewrite(trip, tmp_path / "forged", forge)
    res = audit.reconcile(ledger, bad)
    [e] = res.exceptions("bad-signature")
    assert e["severity"] == "critical" and "(item 3)" in e["message"]
    assert e["host"] == "build-01"
    assert res.data["counts"]["receipts"] == 2
    assert res.data["bundles"][0]["uses"] == 1
    assert res.code == 1


def test_forged_checkpoint_is_reported_and_receipts_checked_one_by_one(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    issued = world.issue()
    ledger = audit.ledger()
    host = world.host()
    try:
        _use(host, issued.data, tmp_path / "a")
        trip = audit.receipts(host, T0 + 3)
    finally:
        host.close()

    def flip(raws: list[bytes], cp: bytes) -> tuple[list[bytes], bytes]:
        return raws, cp[:-1] + bytes([cp[-1] ^ 1])  # the signature's last byte

    res = audit.reconcile(ledger, _rewrite(trip, tmp_path / "bad", flip))
    assert [e["code"] for e in res.data["exceptions"]] == [
        "bad-signature",
        "missing-checkpoint",
    ]
    assert res.data["counts"]["receipts"] == 2  # each one's own signature holds


def test_fork_from_a_host_restored_from_an_old_copy(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    a, b = world.issue(), world.issue()
    ledger = audit.ledger()
    home = world.host_home("build-01")
    shutil.copy2(home / "state.db", tmp_path / "snapshot.db")
    host = world.host()
    try:
        _use(host, a.data, tmp_path / "a")
        before = audit.receipts(host, T0 + 3)
    finally:
        host.close()
    shutil.copy2(tmp_path / "snapshot.db", home / "state.db")  # the restore
    host = world.host()
    try:
        _use(host, b.data, tmp_path / "b", now=T0 + 20)
        after = audit.receipts(host, T0 + 30)
    finally:
        host.close()
    res = audit.reconcile(ledger, before, after)
    forks = res.exceptions("chain-fork")
    assert [(e["host"], e["seq"]) for e in forks] == [("build-01", 1), ("build-01", 2)]
    assert all(e["severity"] == "critical" for e in forks)
    assert forks[0]["file"].startswith(str(after))
    assert "checkpoint-mismatch" in res.codes()
    assert res.code == 1


def test_truncated_tail(world: World, audit: Audit, tmp_path: Path) -> None:
    issued = world.issue(max_uses=2)
    ledger = audit.ledger()
    host = world.host()
    try:
        _use(host, issued.data, tmp_path / "a")
        _use(host, issued.data, tmp_path / "b", now=T0 + 5)
        trip = audit.receipts(host, T0 + 9)
    finally:
        host.close()
    cut = _rewrite(trip, tmp_path / "cut", lambda raws, cp: (raws[:2], cp))
    res = audit.reconcile(ledger, cut)
    [e] = res.exceptions("truncated-tail")
    assert (e["host"], e["seq"], e["severity"]) == ("build-01", 4, "high")
    assert "covers receipts 1..4" in e["message"]
    assert res.data["counts"]["receipts"] == 2  # what arrived still counts
    # the full batch later completes the evidence
    full = audit.reconcile(trip)
    assert full.codes() == {"duplicate-receipt": 1} and full.code == 0


def test_checkpoint_spares_per_receipt_signature_checks(
    world: World, audit: Audit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Receipts reached by hash links from a signed checkpoint's head are
    authentic without their own signature check; the others are checked."""
    issued = world.issue(max_uses=3)
    ledger = audit.ledger()
    host = world.host()
    try:
        for n in range(3):
            _use(host, issued.data, tmp_path / f"o{n}", now=T0 + n)
        trip = audit.receipts(host, T0 + 9)
    finally:
        host.close()
    calls: list[bytes] = []
    real = rfmt.open_receipt

    def counting(data: bytes, keys: Any) -> rfmt.SignedReceipt:
        calls.append(data)
        return real(data, keys)

    monkeypatch.setattr(rfmt, "open_receipt", counting)
    init_auditor(tmp_path / "lib", world.root_bytes)
    auditor = Auditor(tmp_path / "lib")
    try:
        inputs = [
            Input(str(p), p.read_bytes())
            for d in (ledger, trip)
            for p in sorted(d.glob("*.kit"))
        ]
        auditor.ingest(iter(inputs), T0)
        assert calls == [] and auditor.store.counts()["receipts"] == 6
        # a batch cut short: its checkpoint's head is missing, so every
        # receipt that came is checked on its own
        cut = _rewrite(trip, tmp_path / "cut", lambda raws, cp: (raws[:4], cp))
        [batch] = cut.glob("receipts-*.kit")
        auditor.ingest(iter([Input("cut", batch.read_bytes())]), T0)
        assert len(calls) == 4
    finally:
        auditor.close()


def test_reordered_batch_is_flagged_and_counts_the_same(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    """kit writes a batch in seq order (FORMAT.md 8.2): a shuffled file shows,
    pointing at the file and the first receipt out of place, while every
    receipt still counts at its signed seq, with or without a checkpoint."""
    issued = world.issue(max_uses=2)
    ledger = audit.ledger()
    host = world.host()
    try:
        _use(host, issued.data, tmp_path / "a")
        _use(host, issued.data, tmp_path / "b", now=T0 + 5)
        trip = audit.receipts(host, T0 + 9)
    finally:
        host.close()

    def swap(raws: list[bytes], cp: bytes) -> tuple[list[bytes], bytes]:
        return [raws[0], raws[2], raws[1], raws[3]], cp

    shuffled = _rewrite(trip, tmp_path / "shuffled", swap)
    res = audit.reconcile(ledger, shuffled)
    [e] = res.exceptions("batch-out-of-order")
    assert (e["host"], e["seq"], e["severity"]) == ("build-01", 2, "low")
    assert "item 3 of the batch, after receipt 3 (item 2)" in e["message"]
    [batch] = shuffled.glob("receipts-*.kit")
    assert e["file"] == str(batch)
    assert res.codes() == {"batch-out-of-order": 1}  # nothing else is wrong
    assert res.data["counts"]["receipts"] == 4
    assert res.data["bundles"][0]["uses"] == 2
    assert res.code == 1
    # The genuine file adds nothing new (the same receipts) and no finding.
    again = audit.reconcile(trip)
    assert again.codes() == {"batch-out-of-order": 1, "duplicate-receipt": 1}

    loose = _rewrite(trip, tmp_path / "loose", lambda r, c: (r[::-1], b""))
    other = Audit(world, tmp_path / "other")
    res = other.reconcile(ledger, loose)
    [e] = res.exceptions("batch-out-of-order")
    assert (e["host"], e["seq"]) == ("build-01", 3)
    assert res.data["counts"]["receipts"] == 4


def test_chained_receipt_is_held_to_the_strict_reader(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    """A receipt reached by hash links needs no signature check, but its
    envelope must still be one the strict reader accepts: a host that signs
    a checkpoint over a receipt with no signature entry does not get it
    counted by the fast path."""
    issued = world.issue()
    ledger = audit.ledger()
    host = world.host()
    try:
        _use(host, issued.data, tmp_path / "a")
        trip = audit.receipts(host, T0 + 3)
        key = host._signing
    finally:
        host.close()

    def unsigned_head(raws: list[bytes], cp: bytes) -> tuple[list[bytes], bytes]:
        env = rfmt.parse_receipt(raws[-1]).envelope
        bare = rfmt.encoding.encode([env.label, env.body, []])
        old = rfmt.parse_checkpoint(cp)
        head = rfmt.receipt_hash(bare)
        new = rfmt.sign_checkpoint(
            old.host, old.first_seq, old.seq, head, old.time, key
        )
        return [*raws[:-1], bare], new

    res = audit.reconcile(ledger, _rewrite(trip, tmp_path / "bare", unsigned_head))
    [e] = res.exceptions("bad-signature")
    assert "(item 2)" in e["message"]
    assert res.data["counts"]["receipts"] == 1
    assert "truncated-tail" in res.codes()


_ODD_FIELDS: list[dict[str, Any]] = [
    {},
    {"event": "deny", "reason": "wrong-task"},
    {"event": "deny", "reason": "Not A Code!"},
    {"event": "deny"},
    {"reason": "wrong-task"},
    {"command": ("a\x00b",)},
    {"command": ("x",) * 33},
    {"datasets": ("",)},
    {"approvals": ("nothex",)},
    {"bundle_id": "ABC"},
    {"exit_status": 256},
    {"use": 1001},
    {"task": "t" * 64},
    {"delivery": "d" * 17},
    {"detail": "d" * 513},
    {"time": 1},
    {"seq": 0},
    {"prev": b"short"},
    {"host": "other-host"},
]


@pytest.mark.parametrize("odd", _ODD_FIELDS, ids=lambda d: ",".join(d) or "valid")
def test_fast_path_accepts_exactly_what_the_strict_reader_does(
    odd: dict[str, Any],
) -> None:
    """The auditor's fast path for receipts authenticated by hash links
    (FORMAT.md 14.2) must not accept anything :func:`rfmt.open_receipt`
    refuses, nor refuse what it accepts."""
    from kit.audit.auditor import fast_receipt
    from kit.crypto.sign import SigningKey

    key = SigningKey.generate()
    fields: dict[str, Any] = {
        "host": "build-01", "seq": 7, "prev": bytes(32), "time": T0,
        "event": "release", "action": "run", "bundle_id": "ab" * 16,
        "bundle_digest": bytes(32), "task": TASK, "command": ("true",),
        "reason": "", "detail": "", "use": 1, "exit_status": 0,
        "duration_ms": 3, "delivery": "fd",
    }  # fmt: skip
    raw = rfmt.sign_receipt(rfmt.Receipt(**{**fields, **odd}), key)
    try:
        sr = rfmt.open_receipt(raw, {key.key_id: key.public_key})
        strict = sr.receipt.host == "build-01"  # as the auditor then requires
    except (UnauthenticatedError, FormatError):
        strict = False
    fast = fast_receipt(raw, "build-01") is not None
    assert fast == strict, (odd, strict)
    assert strict == (odd == {} or odd == {"event": "deny", "reason": "wrong-task"})


# Encodings of one field that the strict reader refuses (or, for the first,
# accepts): (field, bytes of its value), or a whole-body rewrite.
_ODD_BYTES: list[tuple[str, bytes]] = [
    ("", b""),  # the canonical body itself
    ("seq", b"\xcd\x00\x07"),  # 7 as uint16: a wider form than needed
    ("time", b"\xcb" + struct.pack(">d", float(T0))),  # a float
    ("use", b"\xc3"),  # true, not 1
    ("task", b"\xd9\x01t"),  # a 1-character str8
    ("detail", b"\xd4\x01\x00"),  # an extension type
    ("prev", b"\xa0"),  # a str where bin32 is due
    ("map32", b""),  # the map's header as map32
    ("duplicate", b""),  # one key twice
    ("missing", b""),  # one key fewer
]


@pytest.mark.parametrize("odd", _ODD_BYTES, ids=lambda o: o[0] or "canonical")
def test_fast_path_agrees_with_the_strict_reader_on_encodings(
    odd: tuple[str, bytes],
) -> None:
    """The fast path reads the receipt body as an array of its keys and
    values (FORMAT.md 14.2 receipts are read a million at a time): a body
    that is not exactly the canonical map of the 18 fields, whether by a
    wider form, a wrong type, a repeated or missing key or another map
    header, is refused by both readers alike."""
    import msgpack

    from kit.audit.auditor import fast_receipt
    from kit.crypto.sign import SigningKey
    from kit.formats.envelope import seal_envelope

    key = SigningKey.generate()
    r = rfmt.Receipt(
        host="build-01", seq=7, prev=bytes(32), time=T0, event="release",
        action="run", bundle_id="ab" * 16, bundle_digest=bytes(32), task="t",
        command=("true",), reason="", detail="", use=1, exit_status=0,
        duration_ms=3, delivery="fd",
    )  # fmt: skip
    fields = sorted(r.to_map().items(), key=lambda kv: kv[0].encode())
    name, value = odd
    items = [
        msgpack.packb(k) + (value if k == name else msgpack.packb(v)) for k, v in fields
    ]
    header = b"\xde\x00\x12"
    if name == "map32":
        header = b"\xdf\x00\x00\x00\x12"
    elif name == "duplicate":
        header, items = b"\xde\x00\x13", [*items, items[-1]]
    elif name == "missing":
        header, items = b"\xde\x00\x11", items[:-1]
    raw = seal_envelope(rfmt.LABEL, header + b"".join(items), [key])
    try:
        rfmt.open_receipt(raw, {key.key_id: key.public_key})
        strict = True
    except (UnauthenticatedError, FormatError):
        strict = False
    assert (fast_receipt(raw, "build-01") is not None) == strict
    assert strict == (name == "")


def test_batch_without_checkpoint(world: World, audit: Audit, tmp_path: Path) -> None:
    issued = world.issue()
    ledger = audit.ledger()
    host = world.host()
    try:
        _use(host, issued.data, tmp_path / "a")
        trip = audit.receipts(host, T0 + 3)
    finally:
        host.close()
    res = audit.reconcile(
        ledger, _rewrite(trip, tmp_path / "nocp", lambda r, c: (r, b""))
    )
    [e] = res.exceptions("missing-checkpoint")
    assert (e["host"], e["seq"], e["severity"]) == ("build-01", 1, "medium")
    assert res.status(issued.claims.bundle_id) == "used"


def test_unknown_host(world: World, audit: Audit, tmp_path: Path) -> None:
    """A host set up with the signer's root but never enrolled."""
    request, _ = init_host(
        tmp_path / "stray", "stray-01", "prod", world.root_bytes, T0 - DAY
    )
    del request
    host = Host(tmp_path / "stray")
    try:
        with pytest.raises(UnauthenticatedError):
            host.check(
                world.issue(by=world.attacker).data, task=TASK, command=None, now=T0
            )
        trip = audit.receipts(host, T0 + 3)
    finally:
        host.close()
    res = audit.reconcile(audit.ledger(), trip)
    assert res.codes() == {"unknown-host": 1}
    assert res.data["counts"]["receipts"] == 0
    assert res.code == 1


def test_malformed_input(world: World, audit: Audit, tmp_path: Path) -> None:
    bad = tmp_path / "receipts-build-01-0000000001-0000000001.kit"
    bad.write_bytes(b"\x93\xb4kit/receipt-batch/v1\x90")  # cut short
    res = audit.reconcile(audit.ledger(), bad)
    [e] = res.exceptions("malformed-input")
    assert e["file"] == str(bad) and "truncated" in e["message"]


def test_tampered_folder_is_refused_whole(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    ledger = audit.ledger()
    [path] = ledger.glob("ledger-export-*.kit")
    path.write_bytes(path.read_bytes() + b"x")
    done = world.kit("reconcile", "--home", audit.home, ledger)
    assert done.returncode == 4
    assert b"does not match the manifest" in done.stderr
    db = sqlite3.connect(audit.home / "audit.db")
    assert db.execute("SELECT count(*) FROM inputs").fetchone() == (0,)


# -- use -----------------------------------------------------------------------------


# An id no test issues (ids are 128 random bits; this one is all zeros).
NEVER_ISSUED = "0" * 32


def test_uses_beyond_what_was_allowed(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    """A tampered build-01 releases bundles it should have refused."""
    once = world.issue()
    other_host = world.issue("build-02")
    dev = world.issue("build-03", task="dev-task")
    short = world.issue(ttl=60)
    later = world.issue(not_before=T0 + DAY)
    revoked = world.issue(ttl=DAY)
    world.signer.revoke([("bundle", revoked.claims.bundle_id)], T0 + 100)
    ledger = audit.ledger()
    host = world.host()
    try:
        _use(host, once.data, tmp_path / "a")
        for bundle_id, when, task in (
            (once.claims.bundle_id, T0 + 10, TASK),  # a second use of one
            (other_host.claims.bundle_id, T0 + 11, TASK),  # not its host
            (dev.claims.bundle_id, T0 + 12, "dev-task"),  # another env's bundle
            (short.claims.bundle_id, T0 + 3600, TASK),  # after expiry
            (later.claims.bundle_id, T0 + 13, TASK),  # before not-before
            (NEVER_ISSUED, T0 + 14, TASK),  # no such issuance
            (revoked.claims.bundle_id, T0 + 3000, "other-task"),  # revoked; task
        ):
            _tampered(host, when, bundle_id=bundle_id, task=task)
        trip = audit.receipts(host, T0 + 4000)
    finally:
        host.close()
    res = audit.reconcile(ledger, trip)
    where = {
        c: [(e["seq"], e["bundle_id"]) for e in res.exceptions(c)] for c in res.codes()
    }
    assert where == {
        "overuse": [(3, once.claims.bundle_id)],
        "host-mismatch": [
            (4, other_host.claims.bundle_id),
            (5, dev.claims.bundle_id),
        ],
        "env-mismatch": [(5, dev.claims.bundle_id)],
        "use-after-expiry": [(6, short.claims.bundle_id)],
        "use-before-valid": [(7, later.claims.bundle_id)],
        "unknown-bundle": [(8, NEVER_ISSUED)],
        "task-mismatch": [(9, revoked.claims.bundle_id)],
        "use-after-revocation": [(9, revoked.claims.bundle_id)],
        "clock-anomaly": [(7, "")],  # receipt 7 is dated before receipt 6
    }
    assert res.data["verdicts"]["use"] == "fail"
    assert all(e["host"] == "build-01" and e["file"] for e in res.data["exceptions"])


def test_clock_anomaly_reported_by_the_host(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    a, b = world.issue(), world.issue()
    ledger = audit.ledger()
    host = world.host()
    try:
        _use(host, a.data, tmp_path / "a", now=T0 + 600)
        with pytest.raises(DeniedError):  # the clock went back 10 minutes
            host.authorize(b.data, task=TASK, command=CHILD, now=T0)
        trip = audit.receipts(host, T0 + 700)
    finally:
        host.close()
    res = audit.reconcile(ledger, trip)
    messages = [e["message"] for e in res.exceptions("clock-anomaly")]
    assert "the host reported clock-behind-floor" in messages
    assert res.status(b.claims.bundle_id) == "denied"


# -- the ledger's own integrity ----------------------------------------------------


def test_removed_issuance_and_removed_export_show(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    world.issue()
    first = audit.ledger()
    gone = world.issue()
    world.issue()
    db = sqlite3.connect(world.signer_home / "ledger.db")
    with db:
        db.execute("DELETE FROM bundles WHERE bundle_id = ?", (gone.claims.bundle_id,))
    db.close()
    second = audit.ledger()
    world.issue()
    third = audit.ledger()
    res = audit.reconcile(first, third)
    gaps = [e["message"] for e in res.exceptions("ledger-gap")]
    assert "ledger exports 2..2 are missing" in gaps
    assert "issuances 2..3 of the ledger are missing from its exports" in gaps
    res = audit.reconcile(second)
    assert [e["message"] for e in res.exceptions("ledger-gap")] == [
        "issuances 2..2 of the ledger are missing from its exports"
    ]
    assert res.data["verdicts"]["integrity"] == "fail"


def test_ledger_fork_and_forgery(world: World, audit: Audit, tmp_path: Path) -> None:
    world.issue()
    one, _ = world.signer.ledger_exports(T0)[0]
    # A signer restored from a copy made before export 1 was prepared.
    world.signer.ledger._db.execute("DELETE FROM ledger_exports_prepared")
    world.issue()
    other, _ = world.signer.ledger_exports(T0)[0]  # also number 1, not committed
    forged, _ = world.attacker.ledger_exports(T0)[0]
    paths = []
    for n, data in enumerate((one, other, forged)):
        paths.append(tmp_path / f"export-{n}.kit")
        paths[-1].write_bytes(data)
    res = audit.reconcile(*paths)
    assert res.codes() == {"ledger-fork": 1, "ledger-bad-signature": 1}
    assert res.exceptions("ledger-fork")[0]["file"] == str(paths[1])


# -- reports -----------------------------------------------------------------------


def test_html_report_escapes_input_and_carries_no_script(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    # Reason codes are refused unless plain codes (FORMAT.md 5.5), so the
    # hostile text rides in the task, free text the report must escape.
    issued = world.issue()
    ledger = audit.ledger()
    host = world.host()
    try:
        _tampered(
            host,
            T0,
            bundle_id=issued.claims.bundle_id,
            task="<script>alert(1)</script>",
        )
        trip = audit.receipts(host, T0 + 3)
    finally:
        host.close()
    odd = tmp_path / "<img src=x onerror=alert(2)>.kit"
    [batch] = trip.glob("receipts-*.kit")
    shutil.copy(batch, odd)
    html = tmp_path / "r.html"
    audit.reconcile(ledger, odd, extra=("--html", str(html)))
    page = html.read_text()
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    for part in ("Summary", "Hosts", "Exceptions", "Inputs", "task-mismatch"):
        assert part in page


def test_csv_neutralises_formulas(world: World, tmp_path: Path) -> None:
    init_auditor(tmp_path / "a", world.root_bytes)
    auditor = Auditor(tmp_path / "a")
    try:
        auditor.ingest(
            iter([Input('=HYPERLINK("x")', b"\x93\xb4kit/receipt-batch/v1")]), T0
        )
        auditor.evaluate(T0, 30)
        write_csv(tmp_path / "csv", auditor.store)
    finally:
        auditor.close()
    [row] = list(csv.DictReader((tmp_path / "csv" / "exceptions.csv").open()))
    assert row["file"] == '\'=HYPERLINK("x")'
    for cell in ("=1+1", "+1", "-1", "@x", "\tx", "\rx"):
        assert neutralise(cell) == "'" + cell
    assert neutralise("build-01") == "build-01" and neutralise(5) == 5


def test_codes_are_documented() -> None:
    doc = (ROOT / "docs" / "auditor.md").read_text()
    spec = (ROOT / "docs" / "FORMAT.md").read_text()
    for code in CODES.values():
        assert code.severity in SEVERITIES
        assert f"`{code.code}`" in doc, code.code
        assert f"`{code.code}`" in spec, code.code
    for status in STATUSES:
        assert f"`{status}`" in doc


def test_wrong_home_kind_and_signer_only_options(world: World, tmp_path: Path) -> None:
    done = world.kit(
        "reconcile",
        "--home",
        world.signer_home,
        "--html",
        tmp_path / "r.html",
        tmp_path,
    )
    assert done.returncode == 2 and b"auditor home" in done.stderr
    again = world.kit("audit", "init", "--trust", world.signer_home / ROOT_FILE,
                      "--home", world.signer_home)  # fmt: skip
    assert again.returncode == 5


def test_swapped_trust_root_in_the_home_is_refused(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    ledger = audit.ledger()
    attacker_root = (world.attacker_home / ROOT_FILE).read_bytes()
    (audit.home / ROOT_FILE).write_bytes(attacker_root)
    done = world.kit("reconcile", "--home", audit.home, ledger)
    assert done.returncode == 5
    assert b"not the trust root this auditor home pinned" in done.stderr


def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "reconcile_scale.py"), "--receipts",
         "300", "--hosts", "3", "--json", str(out)],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["receipts"] == 300 and result["hosts"] == 3
    assert result["receipts_per_second"] > 0 and result["peak_rss_mib"] > 0
    assert result["exceptions"] == {}


def test_ledger_export_vectors(tmp_path: Path) -> None:
    """The vectors of FORMAT.md 14, and the valid export reconciled in an
    auditor home with the receipt vectors written from the same keys."""
    vectors = ROOT / "tests" / "vectors"
    manifest = json.loads((vectors / "manifest.json").read_text())
    root_bytes = (vectors / manifest["trust_root"]).read_bytes()
    init_auditor(tmp_path / "a", root_bytes)
    auditor = Auditor(tmp_path / "a")
    try:
        issuers = auditor.root.keys_for("issuer")
        entries = [e for e in manifest["vectors"] if e["kind"] == "ledger-export"]
        assert {e["expect"] for e in entries} == {
            "ok",
            "UnauthenticatedError",
            "FormatError",
        }
        for e in entries:
            data = (vectors / e["file"]).read_bytes()
            if e["expect"] == "ok":
                lx.open_export(data, issuers, 1)
            else:
                with pytest.raises((UnauthenticatedError, lx.FormatError)) as caught:
                    lx.open_export(data, issuers, 1)
                assert type(caught.value).__name__ == e["expect"], e["file"]
        inputs = [
            Input(name, (vectors / name).read_bytes())
            for name in ("receipts-valid.kit", "ledger-export-valid.kit")
        ]
        auditor.ingest(iter(inputs), manifest["now"])
        summary = auditor.evaluate(manifest["now"], manifest["leeway"])
    finally:
        auditor.close()
    assert summary.counts["receipts"] > 0
    assert summary.verdicts["integrity"] == "pass"
    assert summary.statuses["used"] == 1


# -- review fixes: any order, labels, terminal output, reports, pipes ------------


def test_batch_without_checkpoint_before_its_export_is_held_then_counted(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    """A batch whose receipts' key no export names yet is held, not judged:
    fed before the ledger export, its receipts still count once it comes."""
    issued = world.issue()
    host = world.host()
    try:
        _use(host, issued.data, tmp_path / "a")
        trip = audit.receipts(host, T0 + 3)
    finally:
        host.close()
    nocp = _rewrite(trip, tmp_path / "nocp", lambda r, c: (r, b""))
    early = audit.reconcile(nocp)
    assert early.codes() == {"unknown-host": 1}  # held, and no bad-signature
    assert early.data["counts"]["receipts"] == 0
    assert [i["outcome"] for i in early.data["inputs"]] == ["pending"]
    late = audit.reconcile(audit.ledger())
    assert late.codes() == {"missing-checkpoint": 1}
    assert late.status(issued.claims.bundle_id) == "used"
    assert late.data["counts"]["receipts"] == 2
    assert next(i["outcome"] for i in late.data["inputs"]) == "ingested"
    again = audit.reconcile(nocp)  # the same bytes again change nothing
    assert again.codes() == late.codes() and again.data["counts"]["receipts"] == 2


def test_forged_receipt_in_a_batch_without_checkpoint_once_the_key_is_known(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    issued = world.issue()
    ledger = audit.ledger()
    host = world.host()
    try:
        _use(host, issued.data, tmp_path / "a")
        trip = audit.receipts(host, T0 + 3)
    finally:
        host.close()

    def damage(raws: list[bytes], cp: bytes) -> tuple[list[bytes], bytes]:
        last = bytearray(raws[-1])
        last[-1] ^= 1  # its signature no longer verifies under build-01's key
        return [*raws[:-1], bytes(last)], b""

    res = audit.reconcile(ledger, _rewrite(trip, tmp_path / "bad", damage))
    [e] = res.exceptions("bad-signature")
    assert e["severity"] == "critical" and "item 2" in e["message"]
    assert res.data["counts"]["receipts"] == 1 and res.code == 1


def test_damaged_batch_under_a_neutral_name_is_malformed(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    issued = world.issue()
    ledger = audit.ledger()
    host = world.host()
    try:
        _use(host, issued.data, tmp_path / "a")
        trip = audit.receipts(host, T0 + 3)
    finally:
        host.close()
    [batch] = trip.glob("receipts-*.kit")
    damaged = b"\x00" + batch.read_bytes()[1:]
    folder = tmp_path / "neutral"
    write_media(folder, {"evidence-1.bin": damaged})
    res = audit.reconcile(ledger, folder)
    assert res.code == 1 and res.codes() == {"malformed-input": 1}
    [e] = res.exceptions("malformed-input")
    assert e["file"].endswith("evidence-1.bin") and "label" in e["message"]
    outcome = {i["file"]: i["outcome"] for i in res.data["inputs"]}
    assert outcome[str(folder / "evidence-1.bin")] == "malformed"
    assert res.status(issued.claims.bundle_id) == "outstanding"  # nothing counted


def test_other_kit_objects_are_noted_not_evidence(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    issued = world.issue()
    folder = tmp_path / "mixed"
    write_media(
        folder,
        {"a.bin": issued.data, "b.bin": (world.signer_home / ROOT_FILE).read_bytes()},
    )
    res = audit.reconcile(audit.ledger(), folder)
    assert res.code == 0 and res.codes() == {"not-evidence": 2}
    whats = sorted(e["message"].split(",")[0] for e in res.exceptions("not-evidence"))
    assert whats == ["a bundle", "a trust root"]
    assert res.data["counts"]["issuances"] == 1


def test_ledger_export_naming_another_signer_is_refused(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    """Signed by the pinned issuer key, but its body names another signer."""
    import dataclasses

    world.issue()
    [(data, _)] = world.signer.ledger_exports(T0)
    export = lx.open_export(
        data, {world.signer.key.key_id: world.signer.key.public_key}, 1
    )
    assert export.signer != "someone-else"
    renamed = dataclasses.replace(export, signer="someone-else", envelope=None)
    forged = lx.sign_export(renamed, world.signer.key)
    path = tmp_path / "export.kit"
    path.write_bytes(forged)
    res = audit.reconcile(path)
    [e] = res.exceptions("ledger-bad-signature")
    assert "someone-else" in e["message"] and res.code == 1
    assert res.data["counts"]["issuances"] == 0 and res.data["counts"]["hosts"] == 0


def test_terminal_output_escapes_control_characters(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    """A compromised host writes escape sequences into receipt fields; a
    file name can carry them too. Neither reaches the terminal raw."""
    issued = world.issue()
    ledger = audit.ledger()
    host = world.host()
    try:
        _tampered(
            host,
            T0 + 5,
            bundle_id=issued.claims.bundle_id,
            task="\x1b[2J",
            detail="\x1b[2J\x9b\x7f",
        )
        trip = audit.receipts(host, T0 + 6)
    finally:
        host.close()
    odd = tmp_path / "odd\x1b]0;pwned\x07.bin"
    odd.write_bytes(b"junk")
    done = world.kit("reconcile", "--home", audit.home, ledger, trip, odd)
    assert done.returncode == 1
    out = done.stdout.decode()
    assert "task-mismatch" in out and "\\x1b[2J" in out
    assert "odd\\x1b]0;pwned\\x07.bin" in out
    assert not any(c in done.stdout + done.stderr for c in (b"\x1b", b"\x07"))
    # The signer home's reconcile prints the same fields.
    world.close()
    world._signer = None
    done = world.kit("reconcile", "--home", world.signer_home, trip)
    assert done.returncode == 1
    out = done.stdout.decode()
    assert "\\x1b[2J" in out and b"\x1b" not in done.stdout + done.stderr


def test_csv_refuses_a_planted_symlink_and_never_writes_through_one(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    """A link (or device, FIFO) where a report goes is refused, neither
    followed nor replaced; a regular file there is replaced."""
    import os

    from kit.errors import MediaError

    world.issue()
    audit.reconcile(audit.ledger())
    out = tmp_path / "csv"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "bundles.csv").symlink_to(victim)
    auditor = Auditor(audit.home)
    try:
        auditor.evaluate(T0, 300)
        with pytest.raises(MediaError, match="it is a symbolic link, not a regular"):
            write_csv(out, auditor.store)
        assert (out / "bundles.csv").is_symlink()
        assert victim.read_text() == "keep me"
        (out / "bundles.csv").unlink()
        (out / "bundles.csv").write_text("old")
        bundles, _ = write_csv(out, auditor.store)
        assert not bundles.is_symlink() and bundles.read_text().startswith("bundle_id")
        tmp = out / f".exceptions.csv.tmp-{os.getpid()}"
        tmp.symlink_to(victim)
        with pytest.raises(MediaError, match=r"exceptions\.csv"):
            write_csv(out, auditor.store)
        assert victim.read_text() == "keep me" and tmp.is_symlink()
    finally:
        auditor.close()
    assert sorted(p.name for p in out.iterdir()) == [
        f".exceptions.csv.tmp-{os.getpid()}",
        "bundles.csv",
        "exceptions.csv",
    ]


def test_json_to_a_pipe_closed_early_leaves_no_traceback(
    world: World, audit: Audit
) -> None:
    import os

    for _ in range(300):  # bundles enough to overfill the pipe (64 KiB)
        world.issue()
    audit.reconcile(audit.ledger())
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    kit = ROOT / ".venv" / "bin" / "kit"
    ledger = audit.tmp / "ledger-1"  # held already: only the report is written
    for _ in range(5):
        proc = subprocess.Popen(
            [str(kit), "reconcile", "--home", str(audit.home), "--json", str(ledger)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(1) == b"{"
        proc.stdout.close()  # the reader goes away, like `| head -c 1`
        err = proc.stderr.read().decode()
        proc.wait(timeout=60)
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert proc.returncode == 141  # kit's code for a reader gone away


def test_ledger_export_after_a_crash_writes_the_same_bytes_again(
    world: World, audit: Audit, tmp_path: Path
) -> None:
    """A run that signed an export and stopped before recording it (a crash
    between the media and the ledger): the next run writes those very bytes
    again, so the auditor sees no fork; a host enrolled meanwhile is in the
    export after it, never skipped."""
    issued = world.issue()
    [(crashed, _)] = world.signer.ledger_exports(T0)  # never committed
    request, _ = init_host(
        tmp_path / "late", "late-01", "prod", world.root_bytes, T0 - DAY
    )
    world.signer.enroll(request, T0)
    first = audit.ledger()
    assert (first / "ledger-export-0000000001.kit").read_bytes() == crashed
    second = audit.ledger()
    [path] = second.glob("ledger-export-*.kit")
    assert path.name == "ledger-export-0000000002.kit"
    export = lx.open_export(
        path.read_bytes(), {world.signer.key.key_id: world.signer.key.public_key}, 1
    )
    assert [h.name for h in export.hosts] == ["late-01"]
    loose = tmp_path / "crashed-copy.kit"
    loose.write_bytes(crashed)  # the copy the crashed run left on its media
    res = audit.reconcile(first, second, loose)
    assert res.code == 0 and res.codes() == {}
    assert res.data["counts"]["ledger_exports"] == 2
    assert res.status(issued.claims.bundle_id) == "outstanding"
