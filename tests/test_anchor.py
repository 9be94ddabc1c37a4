"""Anchoring the host's state across trips (issue 6): bundles carry the
newest receipt the signer has reconciled for their host, and a host whose
journal does not hold it (restored from an old copy) refuses them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import T0, TASK, World, child_argv

from kit.errors import DeniedError


def _use_and_reconcile(world: World, tmp_path: Path) -> None:
    world.use_and_export(tmp_path / "back", tmp_path / "a")
    done = world.kit("reconcile", tmp_path / "back", "--home", world.signer_home)
    assert done.returncode == 0, done.stdout + done.stderr


def test_bundle_carries_the_reconciled_head(world: World, tmp_path: Path) -> None:
    assert world.issue().claims.anchor_seq == 0  # nothing reconciled yet
    _use_and_reconcile(world, tmp_path)
    later = world.issue()
    assert later.claims.anchor_seq == 2
    assert len(later.claims.anchor_head) == 32
    host = world.host()
    try:
        host.authorize(
            later.data, task=TASK, command=child_argv(tmp_path / "b"), now=T0 + 10
        )
    finally:
        host.close()


def test_host_restored_from_an_old_copy_refuses(world: World, tmp_path: Path) -> None:
    home = world.host_home("build-01")
    snapshot = tmp_path / "snapshot.db"
    shutil.copy2(home / "state.db", snapshot)  # before any use
    _use_and_reconcile(world, tmp_path)
    later = world.issue()
    shutil.copy2(snapshot, home / "state.db")  # the restore
    out = tmp_path / "out"
    host = world.host()
    try:
        with pytest.raises(DeniedError) as caught:
            host.authorize(later.data, task=TASK, command=child_argv(out), now=T0 + 10)
    finally:
        host.close()
    assert caught.value.code == "anchor-not-extended"
    assert "lacks receipt 2" in str(caught.value)
    assert not out.exists()
    assert world.receipts()[-1].reason == "anchor-not-extended"


def test_unclean_reconciliation_moves_no_anchor(world: World, tmp_path: Path) -> None:
    world.use_and_export(tmp_path / "back", tmp_path / "a")
    from kit.formats import receipt as rfmt
    from kit.media import write_media

    batch = next((tmp_path / "back").glob("receipts-*.kit"))
    raws, cp = rfmt.split_batch(batch.read_bytes())
    write_media(tmp_path / "cut", {batch.name: rfmt.encode_batch(raws[:1], cp)})
    done = world.kit("reconcile", tmp_path / "cut", "--home", world.signer_home)
    assert done.returncode == 1
    assert world.signer.ledger.anchor("build-01") is None
    assert world.issue().claims.anchor_seq == 0
