"""kit inventory and secret rotation (issue 5): every identity with what is
outstanding, its last known use and the flags a security team acts on."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from conftest import T0, World

from kit.errors import UsageError
from kit.signer.identity import Identity, load_identities
from kit.signer.inventory import AD_HOC, build_inventory
from kit.signer.signer import IssueRequest

SHIPPED = Path(__file__).parents[1] / "bundles"
DAY = 24 * 3600


@pytest.fixture(autouse=True)
def _an_approver_exists(world: World) -> None:
    """The shipped medium-risk identity asks for an approval, which the
    signer refuses to issue for while its trust root names no approver."""
    world.add_approver()


def _ident(name: str, now: int = T0) -> Identity:
    check = load_identities(SHIPPED, now=now)
    [ident] = [i for i in check.identities if i.name == name]
    return ident


def _issue(
    world: World, ident: Identity, secret: bytes, now: int, **changes: object
) -> str:
    req = IssueRequest(
        host="build-01" if ident.environment == "prod" else "build-03",
        env=ident.environment,
        task=ident.task,
        commands=ident.commands[:1],
        ttl=3600,
        max_uses=1,
        secret_name="KIT_SECRET",
        owner=ident.owner,
        datasets=(),
        risk=ident.risk,
        delivery=ident.delivery,
        identity=ident,
    )
    _, claims = world.signer.issue(dataclasses.replace(req, **changes), secret, now)
    return claims.bundle_id


def _inventory(world: World, folder: Path = SHIPPED, now: int = T0 + 60) -> dict:
    reports = build_inventory(
        load_identities(folder, now=now),
        world.signer.ledger.bundles(),
        world.signer.ledger.usage(),
        now=now,
        lifetime_cap=3 * DAY,
    )
    return {r.name: r for r in reports}


def test_every_identity_is_listed_with_flags(world: World) -> None:
    bid = _issue(world, _ident("nightly-migration-prod"), b"db-pass-1", T0)
    world.issue()  # ad hoc
    inv = _inventory(world)
    assert set(inv) >= {i.name for i in load_identities(SHIPPED, now=T0).identities}
    mig = inv["nightly-migration-prod"]
    assert (mig.owner, mig.environment, mig.risk) == (
        "data-platform@example.com",
        "prod",
        "medium",
    )
    assert [o.bundle_id for o in mig.outstanding] == [bid]
    assert "never used (no reconciled release)" in mig.flags
    assert any("max_lifetime 604800 s above the 259200 s cap" in f for f in mig.flags)
    assert any(f.startswith("ad-hoc") for f in inv[AD_HOC].flags)


def test_reconciled_use_shows_as_last_use(world: World, tmp_path: Path) -> None:
    world.use_and_export(tmp_path / "back", tmp_path / "out")
    done = world.kit("reconcile", tmp_path / "back", "--home", world.signer_home)
    assert done.returncode == 0, done.stderr
    adhoc = _inventory(world)[AD_HOC]
    assert adhoc.last_use == T0 and adhoc.outstanding == []
    assert not any(f.startswith("never used") for f in adhoc.flags)


def test_retired_or_deleted_identity_with_outstanding_bundles(
    world: World, tmp_path: Path
) -> None:
    harness = _ident("test-harness-dev")
    assert harness.retired_at is not None
    _issue(world, harness, b"h-1", harness.retired_at - 600)
    inv = _inventory(world, now=harness.retired_at + 1)
    flags = inv["test-harness-dev"].flags
    assert any(f.startswith("retired but 1 bundle(s) outstanding") for f in flags)
    assert any(f.startswith("past its retirement date") for f in flags)

    trimmed = tmp_path / "bundles"
    shutil.copytree(SHIPPED, trimmed)
    _issue(world, _ident("nightly-migration-prod"), b"db-pass-2", T0)
    (trimmed / "nightly-migration-prod.toml").unlink()
    gone = _inventory(world, folder=trimmed)["nightly-migration-prod"]
    assert not gone.declared and gone.retired
    assert "declaration deleted: treated as retired" in gone.flags
    assert any(f.startswith("retired but") for f in gone.flags)


def test_secret_past_its_rotation_period_warns_or_refuses(world: World) -> None:
    mig = _ident("nightly-migration-prod")
    _issue(world, mig, b"same-secret", T0)
    later = T0 + mig.rotation_period + DAY
    world.signer.warnings.clear()
    _issue(world, mig, b"same-secret", later)
    assert any("rotation" in w for w in world.signer.warnings)
    with pytest.raises(UsageError, match="rotation_period"):
        _issue(world, mig, b"same-secret", later, refuse_stale_secret=True)
    world.signer.warnings.clear()
    _issue(world, mig, b"a-new-secret", later + 1)  # rotated: nothing to say
    assert world.signer.warnings == []
    inv = _inventory(world, now=later + 2)
    assert not any("rotation" in f for f in inv["nightly-migration-prod"].flags)


def test_cli_inventory_json(world: World) -> None:
    world.issue()
    done = world.kit(
        "inventory", "--bundles", SHIPPED, "--home", world.signer_home, "--json"
    )
    assert done.returncode == 0, done.stderr
    names = {r["name"] for r in json.loads(done.stdout)}
    assert {"release-publish-prod", AD_HOC} <= names
