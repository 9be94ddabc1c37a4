"""Reconciliation of real receipts (written by a real host) against the ledger."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CHILD, DAY, T0, TASK, Issued, World

from kit.audit.reconcile import Report, load_batches, reconcile
from kit.crypto.sign import SigningKey
from kit.errors import DeniedError, UnauthenticatedError
from kit.formats import receipt as rfmt
from kit.host.host import Host
from kit.media import write_media

NOW = T0 + 120  # the auditor's clock


@dataclass
class Flow:
    used: Issued
    denied: Issued
    expired: Issued
    outstanding: Issued
    batch: Path  # the exported batch file


def _run_flow(w: World, folder: Path) -> Flow:
    """One of each outcome on build-01, then an export of every receipt."""
    used = w.issue(max_uses=2)
    denied = w.issue()
    expired = w.issue(now=T0 - 2 * DAY, ttl=3600)
    outstanding = w.issue(ttl=DAY)
    host = w.host()
    try:
        release = host.authorize(used.data, task=TASK, command=CHILD, now=T0)
        host.record_exit(release, status=0, duration_ms=5, now=T0 + 1)
        with pytest.raises(DeniedError):
            host.authorize(denied.data, task="other-task", command=CHILD, now=T0 + 2)
        with pytest.raises(UnauthenticatedError):  # no bundle id: matches nothing
            host.check(w.issue(by=w.attacker).data, task=TASK, command=None, now=T0 + 2)
        result = host.export_receipts(folder, T0 + 3)
    finally:
        host.close()
    assert result is not None
    path, first, last = result
    assert (first, last) == (1, 4)
    return Flow(used, denied, expired, outstanding, path)


def _report(w: World, folders: list[Path], now: int = NOW) -> Report:
    return reconcile(
        load_batches(folders),
        w.signer.ledger.hosts(),
        w.signer.ledger.bundles(),
        now=now,
    )


def _codes(report: Report) -> list[str]:
    return [a.code for a in report.anomalies]


def _rewrite(
    batch: Path, folder: Path, receipts: list[bytes], checkpoint: bytes | None = None
) -> None:
    """Write a batch of the same name with other receipts to a new folder."""
    _, cp = rfmt.parse_batch(batch.read_bytes())
    data = rfmt.encode_batch(receipts, checkpoint or cp.envelope.raw)
    write_media(folder, {batch.name: data})


def _raw(batch: Path) -> list[bytes]:
    receipts, _ = rfmt.parse_batch(batch.read_bytes())
    return [sr.envelope.raw for sr in receipts]


def test_clean_flow_has_correct_statuses(world: World, tmp_path: Path) -> None:
    flow = _run_flow(world, tmp_path / "usb")
    report = _report(world, [tmp_path / "usb"])
    assert report.clean, report.anomalies
    assert report.receipts == 4
    assert report.hosts == {"build-01": 4}
    status = {b.bundle_id: b for b in report.bundles}
    assert len(status) == 4
    used = status[flow.used.claims.bundle_id]
    assert (used.status, used.uses) == ("used", 1)
    denied = status[flow.denied.claims.bundle_id]
    assert denied.status == "denied"
    assert len(denied.denials) == 1
    assert denied.denials[0].startswith("wrong-task")
    assert status[flow.expired.claims.bundle_id].status == "unused-expired"
    assert status[flow.outstanding.claims.bundle_id].status == "outstanding"
    # The same outstanding bundle is expired for an auditor a day later.
    later = _report(world, [tmp_path / "usb"], now=T0 + 2 * DAY)
    assert {b.bundle_id: b.status for b in later.bundles}[
        flow.outstanding.claims.bundle_id
    ] == "unused-expired"


def test_deleted_receipt_in_the_middle_is_a_gap(world: World, tmp_path: Path) -> None:
    flow = _run_flow(world, tmp_path / "usb")
    raws = _raw(flow.batch)
    _rewrite(flow.batch, tmp_path / "cut", raws[:1] + raws[2:])
    report = _report(world, [tmp_path / "cut"])
    assert sorted(_codes(report)) == ["batch-incomplete", "chain-gap"]
    [gap] = [a for a in report.anomalies if a.code == "chain-gap"]
    assert gap.seq == 2


def test_forged_receipt_is_a_bad_signature(world: World, tmp_path: Path) -> None:
    flow = _run_flow(world, tmp_path / "usb")
    raws = _raw(flow.batch)
    # The same content (seq 3, a denial) re-signed by a key that is not the host's.
    original = rfmt.parse_receipt(raws[2]).receipt
    forged = rfmt.sign_receipt(original, SigningKey.generate())
    _rewrite(flow.batch, tmp_path / "forged", [*raws[:2], forged, raws[3]])
    report = _report(world, [tmp_path / "forged"])
    bad = [a for a in report.anomalies if a.code == "bad-signature"]
    # Nothing inside an unauthenticated receipt is read, not even its seq:
    # the anomaly names its position in the batch.
    assert len(bad) == 1 and "(item 3)" in bad[0].message
    assert "chain-gap" in _codes(report)  # and the forged one fills no gap
    assert "batch-incomplete" in _codes(report)


def test_forged_checkpoint_is_a_bad_signature(world: World, tmp_path: Path) -> None:
    flow = _run_flow(world, tmp_path / "usb")
    _, cp = rfmt.parse_batch(flow.batch.read_bytes())
    forged = rfmt.sign_checkpoint(
        cp.host, cp.first_seq, cp.seq, cp.head, cp.time, SigningKey.generate()
    )
    _rewrite(flow.batch, tmp_path / "forged", _raw(flow.batch), forged)
    # Signed by a key no enrolled host has: the batch is from an unknown host,
    # and none of its receipts is read.
    report = _report(world, [tmp_path / "forged"])
    assert _codes(report) == ["unknown-host"]
    assert report.receipts == 0


def test_damaged_checkpoint_signature_is_a_bad_signature(
    world: World, tmp_path: Path
) -> None:
    flow = _run_flow(world, tmp_path / "usb")
    raws, cp = rfmt.split_batch(flow.batch.read_bytes())
    damaged = cp[:-1] + bytes([cp[-1] ^ 1])  # last byte of the signature
    _rewrite(flow.batch, tmp_path / "damaged", raws, damaged)
    report = _report(world, [tmp_path / "damaged"])
    assert _codes(report) == ["bad-signature"]
    assert "build-01" in report.anomalies[0].message


def test_two_receipts_with_one_seq_are_a_fork(world: World, tmp_path: Path) -> None:
    """The host is restored from a snapshot and both copies go on deciding."""
    _run_flow(world, tmp_path / "usb")
    home = world.host_home("build-01")
    twin = home.parent / "build-01-snapshot"
    shutil.copytree(home, twin)
    a, b = world.issue(), world.issue()
    for h, bundle, folder in ((home, a, "usb-a"), (twin, b, "usb-b")):
        host = Host(h)
        try:
            host.authorize(bundle.data, task=TASK, command=CHILD, now=T0 + 10)
            assert host.export_receipts(tmp_path / folder, T0 + 11) is not None
        finally:
            host.close()
    report = _report(world, [tmp_path / "usb", tmp_path / "usb-a", tmp_path / "usb-b"])
    forks = [a for a in report.anomalies if a.code == "chain-fork"]
    assert [f.seq for f in forks] == [5]


def test_receipt_for_a_bundle_not_in_the_ledger(world: World, tmp_path: Path) -> None:
    # Genuinely signed by the issuer key, but never recorded in the ledger.
    ghost = world.forge(world.signer.key)
    assert world.signer.ledger.get_bundle(ghost.claims.bundle_id) is None
    host = world.host()
    try:
        host.authorize(ghost.data, task=TASK, command=CHILD, now=T0)
        assert host.export_receipts(tmp_path / "usb", T0 + 1) is not None
    finally:
        host.close()
    report = _report(world, [tmp_path / "usb"])
    assert _codes(report) == ["unknown-bundle"]
    assert report.anomalies[0].bundle_id == ghost.claims.bundle_id


def test_truncated_batch_mismatches_its_checkpoint(
    world: World, tmp_path: Path
) -> None:
    flow = _run_flow(world, tmp_path / "usb")
    _rewrite(flow.batch, tmp_path / "short", _raw(flow.batch)[:-1])
    report = _report(world, [tmp_path / "short"])
    assert sorted(_codes(report)) == ["batch-incomplete", "checkpoint-mismatch"]
    assert {a.seq for a in report.anomalies} == {4}


def test_reordered_batch_is_an_anomaly_that_changes_no_status(
    world: World, tmp_path: Path
) -> None:
    flow = _run_flow(world, tmp_path / "usb")
    raws = _raw(flow.batch)
    _rewrite(flow.batch, tmp_path / "shuffled", [raws[1], raws[0], *raws[2:]])
    report = _report(world, [tmp_path / "shuffled"])
    [a] = report.anomalies
    assert (a.code, a.host, a.seq) == ("batch-out-of-order", "build-01", 1)
    assert a.source.startswith(str(tmp_path / "shuffled"))
    assert "receipt 1 after receipt 2" in a.message
    assert not report.clean  # the signer records no anchor or use from it
    genuine = _report(world, [tmp_path / "usb"])
    assert _summary(report)[:3] == _summary(genuine)[:3]


def _summary(report: Report) -> tuple[object, ...]:
    return (
        report.receipts,
        report.hosts,
        sorted(
            (b.bundle_id, b.status, b.uses, tuple(b.denials)) for b in report.bundles
        ),
        [(a.code, a.seq, a.bundle_id) for a in report.anomalies],
    )


def test_the_same_batch_twice_changes_nothing(world: World, tmp_path: Path) -> None:
    flow = _run_flow(world, tmp_path / "usb")
    copy = tmp_path / "usb-copy"
    shutil.copytree(tmp_path / "usb", copy)
    once = _report(world, [tmp_path / "usb"])
    twice = _report(world, [tmp_path / "usb", copy])
    assert len(load_batches([tmp_path / "usb", copy])) == 2
    assert twice.clean
    assert _summary(twice) == _summary(once)
    # A later incremental batch plus a re-delivery of the first one: still clean.
    host = world.host()
    try:
        host.authorize(flow.used.data, task=TASK, command=CHILD, now=T0 + 20)
        assert host.export_receipts(tmp_path / "usb-2", T0 + 21) is not None
    finally:
        host.close()
    report = _report(world, [tmp_path / "usb", tmp_path / "usb-2", copy])
    assert report.clean, report.anomalies
    assert report.receipts == 5
    used = {b.bundle_id: b for b in report.bundles}[flow.used.claims.bundle_id]
    assert (used.status, used.uses) == ("used", 2)


def test_cli_reconcile_exit_codes(world: World, tmp_path: Path) -> None:
    flow = _run_flow(world, tmp_path / "usb")
    signer = world.signer_home
    proc = world.kit("reconcile", tmp_path / "usb", "--home", signer, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["clean"] is True
    assert out["anomalies"] == []
    assert out["receipts"] == 4

    _rewrite(flow.batch, tmp_path / "short", _raw(flow.batch)[:-1])
    proc = world.kit("reconcile", tmp_path / "short", "--home", signer)
    assert proc.returncode == 1, proc.stderr
    assert b"ANOMALY checkpoint-mismatch" in proc.stdout


def test_refusals_of_unauthenticated_input_reach_the_auditor(
    world: World, tmp_path: Path
) -> None:
    _run_flow(world, tmp_path / "usb")  # holds one attacker-signed bundle refusal
    report = _report(world, [tmp_path / "usb"])
    [refusal] = report.unauthenticated
    assert (refusal.host, refusal.seq, refusal.reason) == (
        "build-01",
        4,
        "unauthenticated",
    )
    proc = world.kit(
        "reconcile", tmp_path / "usb", "--home", world.signer_home, "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["unauthenticated"][0]["reason"] == (
        "unauthenticated"
    )
    text = world.kit("reconcile", tmp_path / "usb", "--home", world.signer_home)
    assert b"refused unauthenticated input on build-01 (seq 4" in text.stdout
