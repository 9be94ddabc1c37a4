"""Revocation lists and retirement carried by hand (issue 6): each rule with
the hostile input; nothing is released and a denial receipt names why."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import DAY, T0, TASK, World, child_argv

from kit.crypto.sign import SigningKey
from kit.errors import DeniedError, FormatError, UnauthenticatedError
from kit.formats.revocation import Entry, load_list, sign_list
from kit.media import write_media

HOUR = 3600


def _carry(world: World, data: bytes, folder: Path, now: int = T0) -> None:
    write_media(folder, {"revocations.kit": data})
    host = world.host()
    try:
        host.import_media(folder, now=now)
    finally:
        host.close()


def _publish(
    world: World,
    tmp_path: Path,
    name: str,
    *entries: tuple[str, str],
    now: int = T0,
    validity: int = 24 * HOUR,
) -> bytes:
    world.signer.revoke(list(entries), now)
    data = world.signer.revocation_list(now, validity)
    _carry(world, data, tmp_path / name, now)
    return data


def _refused(world: World, data: bytes, tmp_path: Path, now: int = T0) -> DeniedError:
    out = tmp_path / "out"
    host = world.host()
    try:
        with pytest.raises(DeniedError) as caught:
            host.authorize(data, task=TASK, command=child_argv(out), now=now)
    finally:
        host.close()
    assert not out.exists()
    return caught.value


@pytest.mark.parametrize("kind", ["bundle", "identity", "host", "env", "key", "before"])
def test_every_kind_of_revocation_is_enforced(
    world: World, tmp_path: Path, kind: str
) -> None:
    issued = world.issue()
    c = issued.claims
    value = {
        "bundle": c.bundle_id,
        "identity": "nightly-export-prod",
        "host": c.host,
        "env": c.env,
        "key": c.issuer,
        "before": str(T0 + 1),
    }[kind]
    if kind == "identity":  # an identity bundle, made directly for the test
        issued = world.forge(
            world.signer.key, identity="nightly-export-prod", declaration=bytes(32)
        )
    _publish(world, tmp_path, "usb", (kind, value))
    exc = _refused(world, issued.data, tmp_path)
    assert exc.code == "revoked" and (value in str(exc) or kind == "before")
    last = world.receipts()[-1]
    assert (last.event, last.reason) == ("deny", "revoked")
    assert world.uses() == []


def test_stale_list_refuses_every_release(world: World, tmp_path: Path) -> None:
    _publish(world, tmp_path, "usb1", validity=HOUR)
    issued = world.issue(now=T0 + 2 * HOUR)
    exc = _refused(world, issued.data, tmp_path, now=T0 + 2 * HOUR)
    assert exc.code == "revocation-list-stale"
    assert "expired 60 min (3600 s) ago" in str(exc)
    _publish(world, tmp_path, "usb2", now=T0 + 2 * HOUR)  # freshness arrives
    host = world.host()
    try:
        host.authorize(
            issued.data,
            task=TASK,
            command=child_argv(tmp_path / "o"),
            now=T0 + 2 * HOUR,
        )
    finally:
        host.close()


def test_rollback_and_fork_are_refused(world: World, tmp_path: Path) -> None:
    v1 = world.signer.revocation_list(T0, HOUR)
    v2 = _publish(world, tmp_path, "usb2", ("env", "staging"))
    with pytest.raises(DeniedError, match="rollback"):
        _carry(world, v1, tmp_path / "old")
    other = sign_list(world.signer.root.name, 2, T0, T0 + HOUR, [], world.signer.key)
    with pytest.raises(DeniedError, match="a different revocation list v2"):
        _carry(world, other, tmp_path / "fork")
    host = world.host()
    try:
        assert host.revocations is not None
        assert (
            host.revocations.digest
            == load_list(v2, world.signer.root.keys_for("revoker")).digest
        )
    finally:
        host.close()
    # an expired list still sets the version floor
    with pytest.raises(DeniedError, match="rollback"):
        _carry(world, v1, tmp_path / "old-again")


def test_list_by_a_non_revoker_or_malformed_is_refused(
    world: World, tmp_path: Path
) -> None:
    thief = SigningKey.generate()
    forged = sign_list(world.signer.root.name, 5, T0, T0 + HOUR, [], thief)
    with pytest.raises(UnauthenticatedError, match="not validly signed"):
        _carry(world, forged, tmp_path / "forged")
    bad = sign_list(
        world.signer.root.name,
        5,
        T0,
        T0 + HOUR,
        [Entry("bundle", "ABCDEF" * 5 + "AB")],
        world.signer.key,
    )
    with pytest.raises(FormatError):
        load_list(bad, world.signer.root.keys_for("revoker"))
    with pytest.raises(FormatError, match="revocation bundle"):
        _carry(world, bad, tmp_path / "bad")
    host = world.host()
    try:
        assert host.revocations is None  # nothing was taken in
    finally:
        host.close()


def test_retire_refuses_issuance_and_revokes(world: World, tmp_path: Path) -> None:
    home = world.signer_home
    done = world.kit("retire", "host", "build-02", "--home", home)
    assert done.returncode == 0, done.stderr
    secret = tmp_path / "s"
    secret.write_bytes(b"tok")
    again = world.kit(
        "issue",
        "--host",
        "build-02",
        "--env",
        "prod",
        "--task",
        TASK,
        "--ttl",
        "1h",
        "--command",
        "sh",
        "--secret-file",
        secret,
        "--home",
        home,
    )
    assert again.returncode == 2 and b"host build-02 is retired" in again.stderr
    usb = tmp_path / "usb"
    export = world.kit("export", "--to", usb, "--home", home)
    assert export.returncode == 0, export.stderr
    imp = world.kit("import", usb, "--home", world.host_home("build-01"))
    assert imp.returncode == 0, imp.stderr
    other = world.issue("build-01")
    host = world.host()
    try:
        assert host.revocations is not None
        assert ("host", "build-02") in {
            (e.kind, e.value) for e in host.revocations.entries
        }
        host.authorize(
            other.data, task=TASK, command=child_argv(tmp_path / "o"), now=T0
        )  # build-01 itself is untouched
    finally:
        host.close()


def test_bad_revoke_arguments_are_usage_errors(world: World) -> None:
    home = world.signer_home
    assert world.kit("revoke", "--home", home).returncode == 2
    bad = world.kit("revoke", "--bundle", "NOT-AN-ID", "--home", home)
    assert bad.returncode == 2 and b"revocation bundle" in bad.stderr
    assert world.kit("retire", "planet", "x", "--home", home).returncode == 2


def test_list_of_another_signer_name_is_refused(world: World, tmp_path: Path) -> None:
    other = sign_list("someone-else", 3, T0, T0 + HOUR, [], world.signer.key)
    with pytest.raises(DeniedError, match="a revocation list of 'someone-else'"):
        _carry(world, other, tmp_path / "usb")


def test_list_whose_revoker_left_the_root_blocks_releases_until_replaced(
    world: World, tmp_path: Path
) -> None:
    from kit.formats.trustroot import KeySpec

    revoker = SigningKey.generate()
    world.signer.rotate(T0, add=(KeySpec(revoker.public_key, ("revoker",), "rv"),))
    listed = sign_list(world.signer.root.name, 7, T0, T0 + HOUR, [], revoker)
    usb = tmp_path / "usb"
    write_media(usb, {**world.signer.root_history(), "revocations.kit": listed})
    host = world.host()
    try:
        host.import_media(usb, now=T0)
        assert host.revocations is not None and host.revocations.version == 7
    finally:
        host.close()
    world.signer.rotate(T0, remove=(revoker.key_id,))
    write_media(tmp_path / "usb2", world.signer.root_history())
    host = world.host()
    try:
        host.import_media(tmp_path / "usb2", now=T0)
    finally:
        host.close()
    exc = _refused(world, world.issue().data, tmp_path)  # the host still opens
    assert exc.code == "revocation-list-stale" and "no longer signed" in str(exc)
    older = sign_list(world.signer.root.name, 6, T0, T0 + HOUR, [], world.signer.key)
    with pytest.raises(DeniedError, match="rollback"):  # the floor survives
        _carry(world, older, tmp_path / "old")
    fresh = sign_list(world.signer.root.name, 8, T0, T0 + HOUR, [], world.signer.key)
    _carry(world, fresh, tmp_path / "fresh")
    host = world.host()
    try:
        host.authorize(
            world.issue().data, task=TASK, command=child_argv(tmp_path / "o"), now=T0
        )
    finally:
        host.close()


def test_list_issued_after_the_host_clock_is_refused(
    world: World, tmp_path: Path
) -> None:
    """A signer whose clock runs years ahead would otherwise put a list in
    force until then, and staleness would never show."""
    ahead = T0 + 4 * 365 * DAY
    future = sign_list(
        world.signer.root.name, 7, ahead, ahead + DAY, [], world.signer.key
    )
    with pytest.raises(DeniedError, match=r"issued \d+ s after this host's clock"):
        _carry(world, future, tmp_path / "future")
    denial = world.receipts()[-1]
    assert (denial.action, denial.reason) == ("import", "revocation-from-the-future")
    assert denial.bundle_digest == hashlib.sha256(future).digest()
    host = world.host()
    try:
        assert host.revocations is None  # nothing taken in, no floor raised
        assert host.state.get("revocation_version") is None
    finally:
        host.close()


def test_revoking_entry_is_the_one_rule_host_and_signer_share() -> None:
    """Named entries in the order bundle, identity, host, env, key; else the
    latest 'before' cutoff the bundle's issue time precedes."""
    from kit.formats.revocation import revoking_entry

    claims = {"bundle_id": "b" * 32, "identity": "", "host": "h1", "env": "prod",
              "issuer": "k" * 32, "issued_at": 1_000}  # fmt: skip
    assert revoking_entry([], **claims) is None
    assert revoking_entry([("identity", "")], **claims) is None  # ad hoc: none
    both = [("env", "prod"), ("host", "h1")]
    assert revoking_entry(both, **claims) == ("host", "h1")
    assert revoking_entry([("before", "900"), ("before", "1001")], **claims) == (
        "before",
        "1001",
    )
    assert revoking_entry([("before", "1000")], **claims) is None  # not before
    assert revoking_entry([("before", "2000"), ("key", "k" * 32)], **claims) == (
        "key",
        "k" * 32,
    )
