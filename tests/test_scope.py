"""Issue 5: bundles issued under a declared workflow identity, and every scope
axis (dataset, risk, delivery) enforced by the host with a denial receipt that
names the axis and the value."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import T0, TASK, World, child_argv

from kit.errors import DeniedError, UsageError
from kit.host.policy import FILE as POLICY_FILE
from kit.signer.identity import Identity, load_identities
from kit.signer.signer import IssueRequest

SHIPPED = Path(__file__).parents[1] / "bundles"


@pytest.fixture(autouse=True)
def _an_approver_exists(world: World) -> None:
    """The shipped medium-risk identity asks for an approval, which the
    signer refuses to issue for while its trust root names no approver."""
    world.add_approver()


@pytest.fixture
def migration() -> Identity:
    check = load_identities(SHIPPED, now=T0)
    assert check.ok
    [ident] = [i for i in check.identities if i.name == "nightly-migration-prod"]
    return ident


def _request(ident: Identity, **changes: object) -> IssueRequest:
    req = IssueRequest(
        host="build-01",
        env=ident.environment,
        task=ident.task,
        commands=ident.commands,
        ttl=3600,
        max_uses=1,
        secret_name="KIT_SECRET",
        owner=ident.owner,
        datasets=ident.datasets,
        risk=ident.risk,
        delivery=ident.delivery,
        identity=ident,
    )
    return dataclasses.replace(req, **changes)  # type: ignore[arg-type]


def test_issue_under_an_identity_records_it(world: World, migration: Identity) -> None:
    _, claims = world.signer.issue(_request(migration), b"tok-1", T0)
    assert claims.identity == "nightly-migration-prod"
    assert claims.declaration == bytes.fromhex(migration.digest)
    assert (claims.risk, claims.owner) == ("medium", "data-platform@example.com")
    rec = world.signer.ledger.get_bundle(claims.bundle_id)
    assert rec is not None
    assert (rec.identity, rec.risk, rec.datasets) == (
        "nightly-migration-prod",
        "medium",
        ("orders-db",),
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"env": "dev"}, "env:"),
        ({"task": "other"}, "task:"),
        ({"commands": (("alembic", "downgrade"),)}, "command:"),
        ({"datasets": ("payments-db",)}, "dataset:"),
        ({"ttl": 8 * 24 * 3600}, "ttl:"),
        ({"max_uses": 8}, "max_uses:"),
        ({"risk": "low"}, "risk and owner"),
        ({"delivery": ("env", "fd")}, "delivery: 'env'"),
    ],
)
def test_request_wider_than_the_declaration_is_refused(
    world: World, migration: Identity, changes: dict[str, object], field: str
) -> None:
    before = world.signer.ledger.bundles()
    with pytest.raises(UsageError, match=field):
        world.signer.issue(_request(migration, **changes), b"tok-2", T0)
    assert world.signer.ledger.bundles() == before  # nothing recorded


def test_narrower_request_is_allowed(world: World, migration: Identity) -> None:
    narrow = _request(
        migration, commands=(("alembic", "upgrade", "head"),), datasets=(), ttl=60
    )
    _, claims = world.signer.issue(narrow, b"tok-3", T0)
    assert claims.datasets == () and claims.expires_at - claims.not_before == 60


def test_retired_identity_issues_nothing(world: World) -> None:
    check = load_identities(SHIPPED, now=T0)
    [harness] = [i for i in check.identities if i.retire_on is not None]
    assert harness.retired_at is not None
    late = harness.retired_at + 1
    req = _request(harness, host="build-03", commands=harness.commands[:1])
    with pytest.raises(UsageError, match="retired"):
        world.signer.issue(req, b"tok-4", late)


def _host_deny(world: World, data: bytes, out: Path, **kw: Any) -> DeniedError:
    host = world.host()
    try:
        with pytest.raises(DeniedError) as caught:
            host.authorize(data, task=TASK, command=child_argv(out), now=T0, **kw)
    finally:
        host.close()
    assert not out.exists()
    return caught.value


def test_dataset_outside_the_bundle_is_refused(world: World, tmp_path: Path) -> None:
    issued = world.issue(datasets=("orders-db",))
    exc = _host_deny(
        world, issued.data, tmp_path / "o", datasets=("orders-db", "payments-db")
    )
    assert exc.code == "dataset-not-allowed"
    assert "dataset: 'payments-db'" in str(exc)
    last = world.receipts()[-1]
    assert (last.reason, last.datasets) == (
        "dataset-not-allowed",
        ("orders-db", "payments-db"),
    )
    assert world.uses() == []


def test_declared_dataset_is_released_and_recorded(
    world: World, tmp_path: Path
) -> None:
    issued = world.issue(datasets=("orders-db",))
    host = world.host()
    try:
        release = host.authorize(
            issued.data,
            task=TASK,
            command=child_argv(tmp_path / "o"),
            now=T0,
            datasets=("orders-db",),
            delivery="fd",
        )
    finally:
        host.close()
    assert release.secret == issued.secret
    last = world.receipts()[-1]
    assert (last.event, last.datasets, last.delivery) == (
        "release",
        ("orders-db",),
        "fd",
    )


def test_high_risk_needs_the_host_policy_to_accept_it(
    world: World, tmp_path: Path
) -> None:
    issued = world.issue(risk="high", max_uses=2)
    exc = _host_deny(world, issued.data, tmp_path / "o")
    assert exc.code == "risk-not-accepted" and "high-risk" in str(exc)
    (world.host_home("build-01") / POLICY_FILE).write_text(
        'environments = ["prod"]\nrisk_levels = ["low", "medium", "high"]\n'
    )
    exc = _host_deny(world, issued.data, tmp_path / "o", confirm=lambda c: False)
    assert exc.code == "not-confirmed"
    assert world.uses() == []  # a refused confirmation costs no use
    host = world.host()
    try:
        host.authorize(
            issued.data,
            task=TASK,
            command=child_argv(tmp_path / "o"),
            now=T0,
            confirm=lambda c: c.risk == "high",
        )
    finally:
        host.close()
    assert len(world.uses()) == 1


def test_delivery_mode_the_bundle_forbids_is_refused(
    world: World, tmp_path: Path
) -> None:
    issued = world.issue(delivery=("fd", "file"))
    exc = _host_deny(world, issued.data, tmp_path / "o", delivery="env")
    assert exc.code == "delivery-not-allowed"
    assert "--deliver env" in str(exc) and "fd, file" in str(exc)


def test_cli_run_and_verify_enforce_datasets(world: World, tmp_path: Path) -> None:
    issued = world.issue(datasets=("orders-db",))
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(issued.data)
    home = world.host_home("build-01")
    v = world.kit(
        "verify",
        bundle,
        "--task",
        TASK,
        "--dataset",
        "payments-db",
        "--home",
        home,
        "--json",
    )
    assert v.returncode == 1
    assert json.loads(v.stdout)["reason"] == "dataset-not-allowed"
    assert b"[dataset-not-allowed]" in v.stderr
    out = tmp_path / "out"
    r = world.kit(
        "run",
        bundle,
        "--task",
        TASK,
        "--dataset",
        "payments-db",
        "--home",
        home,
        "--",
        *child_argv(out),
    )
    assert r.returncode == 120 and not out.exists()
    r = world.kit(
        "run",
        bundle,
        "--task",
        TASK,
        "--dataset",
        "orders-db",
        "--home",
        home,
        "--",
        *child_argv(out),
    )
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == issued.secret


def test_cli_issue_with_identity_and_refusal(world: World, tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_bytes(b"tok-cli")
    ok = world.kit(
        "issue",
        "--identity",
        "nightly-migration-prod",
        "--host",
        "build-01",
        "--bundles",
        SHIPPED,
        "--ttl",
        "1h",
        "--secret-file",
        secret,
        "--home",
        world.signer_home,
        "--json",
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["identity"] == "nightly-migration-prod"
    wide = world.kit(
        "issue",
        "--identity",
        "nightly-migration-prod",
        "--host",
        "build-01",
        "--bundles",
        SHIPPED,
        "--dataset",
        "payments-db",
        "--secret-file",
        secret,
        "--home",
        world.signer_home,
    )
    assert wide.returncode == 2
    assert b"dataset: 'payments-db' is not declared" in wide.stderr
    unknown = world.kit(
        "issue",
        "--identity",
        "nope",
        "--host",
        "build-01",
        "--bundles",
        SHIPPED,
        "--secret-file",
        secret,
        "--home",
        world.signer_home,
    )
    assert unknown.returncode == 2 and b"no identity 'nope'" in unknown.stderr


def test_command_prefix_is_exact(world: World) -> None:
    issued = world.issue(commands=(("sh", "-c"),))
    for argv in (("sh",), ("bash", "-c", "true"), ("sh", "-cx", "true")):
        host = world.host()
        try:
            with pytest.raises(DeniedError, match="command: ") as caught:
                host.authorize(issued.data, task=TASK, command=argv, now=T0)
        finally:
            host.close()
        assert caught.value.code == "command-not-allowed"
    assert world.uses() == []


def test_declaration_without_env_delivery_reaches_the_host(
    world: World, migration: Identity, tmp_path: Path
) -> None:
    assert migration.delivery == ("fd", "file")
    unapproved = dataclasses.replace(migration, approvals=0)  # approvals: elsewhere
    data, claims = world.signer.issue(_request(unapproved), b"tok-5", T0)
    assert claims.delivery == ("fd", "file")
    host = world.host()
    try:
        with pytest.raises(DeniedError) as caught:
            host.authorize(
                data,
                task=migration.task,
                command=migration.commands[0],
                now=T0,
                datasets=migration.datasets,
                delivery="env",
            )
    finally:
        host.close()
    exc = caught.value
    assert exc.code == "delivery-not-allowed"
    secret = tmp_path / "s"
    secret.write_bytes(b"tok-6")
    proc = world.kit(
        "issue",
        "--identity",
        "nightly-migration-prod",
        "--host",
        "build-01",
        "--bundles",
        SHIPPED,
        "--ttl",
        "1h",
        "--allow-deliver",
        "env",
        "--secret-file",
        secret,
        "--home",
        world.signer_home,
    )
    assert proc.returncode == 2 and b"delivery: 'env' is not allowed" in proc.stderr


def test_high_risk_without_a_terminal_needs_yes(world: World, tmp_path: Path) -> None:
    (world.host_home("build-01") / POLICY_FILE).write_text(
        'environments = ["prod"]\nrisk_levels = ["low", "medium", "high"]\n'
    )
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue(risk="high").data)
    out = tmp_path / "out"
    home = world.host_home("build-01")
    no = world.kit(
        "run", bundle, "--task", TASK, "--home", home, "--", *child_argv(out)
    )
    assert no.returncode == 120 and b"pass --yes" in no.stderr
    assert b"[not-confirmed]" in no.stderr and not out.exists()
    assert world.uses() == []
    yes = world.kit(
        "run", bundle, "--task", TASK, "--yes", "--home", home, "--", *child_argv(out)
    )
    assert yes.returncode == 0, yes.stderr


def test_closed_stdout_is_not_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`kit ... | head` closing the pipe ends kit quietly with 141, the shell's
    code for SIGPIPE, not with an internal error."""
    import os
    import sys

    import typer

    from kit.cli.common import handled

    @handled()
    def writes_to_a_closed_pipe() -> None:
        raise BrokenPipeError

    target = tmp_path / "stdout"
    with target.open("w") as fake:
        monkeypatch.setattr(sys, "stdout", fake)
        saved = os.dup(fake.fileno())
        try:
            with pytest.raises(typer.Exit) as caught:
                writes_to_a_closed_pipe()
        finally:
            os.dup2(saved, fake.fileno())
            os.close(saved)
    assert caught.value.exit_code == 141
