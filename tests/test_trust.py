"""Approvals for risky bundles and trust-root rotation carried by hand: each
rule with the hostile input (issues 5 and 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PASSPHRASE, T0, TASK, World, child_argv

from kit import encoding
from kit.crypto.sign import SigningKey
from kit.errors import DeniedError, FormatError, UnauthenticatedError, UsageError
from kit.formats.bundle import parse_bundle
from kit.formats.pubkey import load_public_key_file
from kit.formats.trustroot import KeySpec, sign_trust_root
from kit.media import write_media
from kit.signer.approver import Approver, Pending, init_approver

HOUR = 3600


def _approver(world: World, tmp_path: Path, label: str) -> Approver:
    home = tmp_path / f"approver-{label}"
    pub = init_approver(
        home,
        label,
        PASSPHRASE,
        world.signer.root.envelope.raw,
        now=T0,
        kdf_profile="interactive",
    )
    pk = load_public_key_file(pub)
    world.signer.rotate(T0, add=(KeySpec(pk.public_key, ("approver",), label),))
    a = Approver(home)
    a.unlock(PASSPHRASE)
    a.catch_up(list(world.signer.root_history().values()))
    return a


def _carry_roots(world: World, tmp_path: Path, name: str = "usb") -> Path:
    usb = tmp_path / name
    write_media(usb, world.signer.root_history())
    host = world.host()
    try:
        host.import_media(usb, now=T0)
    finally:
        host.close()
    return usb


def _run(world: World, data: bytes, tmp_path: Path) -> None:
    host = world.host()
    try:
        host.authorize(data, task=TASK, command=child_argv(tmp_path / "o"), now=T0)
    finally:
        host.close()


def _refused(world: World, data: bytes, tmp_path: Path) -> DeniedError:
    with pytest.raises(DeniedError) as caught:
        _run(world, data, tmp_path)
    assert not (tmp_path / "o").exists()
    return caught.value


def _cosigned(world: World, by: list[Approver], **changes: object) -> None:
    """Propose the next root, have ``by`` co-sign it, install it."""
    data, _, needed = world.signer.propose(T0, **changes)  # type: ignore[arg-type]
    assert needed <= len(by)
    for a in by:
        data, _ = a.approve_root(data)
    world.signer.install(data)
    for a in by:
        a.catch_up([data])


@pytest.fixture
def two_approvers(world: World, tmp_path: Path) -> tuple[Approver, Approver]:
    alice = _approver(world, tmp_path, "alice")  # the first needs no co-signer
    bob_home = tmp_path / "approver-bob"
    pub = init_approver(
        bob_home,
        "bob",
        PASSPHRASE,
        world.signer.root.envelope.raw,
        now=T0,
        kdf_profile="interactive",
    )
    pk = load_public_key_file(pub)
    _cosigned(world, [alice], add=(KeySpec(pk.public_key, ("approver",), "bob"),))
    bob = Approver(bob_home)
    bob.unlock(PASSPHRASE)
    assert bob.catch_up(list(world.signer.root_history().values())) == 3
    _cosigned(world, [alice], approvals={"low": 0, "medium": 1, "high": 2})
    for a in (alice, bob):
        assert a.catch_up(list(world.signer.root_history().values())) == 4
    _carry_roots(world, tmp_path)
    (world.host_home("build-01") / "policy.toml").write_text(
        'environments = ["prod"]\nrisk_levels = ["low", "medium", "high"]\n'
    )
    return alice, bob


def test_signer_alone_cannot_change_approvers_once_there_are_some(
    world: World, tmp_path: Path, two_approvers: tuple[Approver, Approver]
) -> None:
    """The signer adding an approver of its own, or lowering the counts,
    needs the current approvers; a host refuses the root without them."""
    mallory = SigningKey.generate()
    with pytest.raises(UsageError, match="must co-sign it first"):
        world.signer.rotate(T0, add=(KeySpec(mallory.public_key, ("approver",), "m"),))
    with pytest.raises(UsageError, match="must co-sign it first"):
        world.signer.rotate(T0, approvals={"low": 0, "medium": 0, "high": 0})
    data, new, needed = world.signer.propose(
        T0, approvals={"low": 0, "medium": 0, "high": 0}
    )
    assert needed == 2
    usb = tmp_path / "sneaky"
    write_media(usb, {f"trust-root-v{new.version:06d}.kit": data})
    host = world.host()
    try:
        with pytest.raises(
            UnauthenticatedError, match="2 approver\\(s\\) of v4 must co-sign"
        ):
            host.import_media(usb, now=T0)
        assert host.root.version == 4
    finally:
        host.close()
    alice, bob = two_approvers
    once, _ = alice.approve_root(data)
    twice, _ = bob.approve_root(once)
    assert world.signer.install(twice).approvals["high"] == 0


def test_rotation_reaches_the_host_and_sets_approval_counts(
    world: World, tmp_path: Path, two_approvers: tuple[Approver, Approver]
) -> None:
    host = world.host()
    try:
        assert host.root.version == world.signer.root.version == 4
        assert host.root.approvals == {"low": 0, "medium": 1, "high": 2}
    finally:
        host.close()


def test_bundle_short_of_approvals_is_refused(
    world: World, tmp_path: Path, two_approvers: tuple[Approver, Approver]
) -> None:
    alice, _ = two_approvers
    issued = world.issue(risk="medium")
    exc = _refused(world, issued.data, tmp_path)
    assert exc.code == "approvals-missing"
    assert "needs 1 distinct approval(s); it has 0 (nobody)" in str(exc)
    approved, _ = alice.approve(issued.data)
    _run(world, approved, tmp_path)
    assert len(world.uses()) == 1
    release = world.receipts()[-1]
    [alice_id] = [k.key_id for k in alice.root.keys if k.label == "alice"]
    assert (release.event, release.approvals) == ("release", (alice_id,))


def test_one_approver_twice_counts_once(
    world: World, tmp_path: Path, two_approvers: tuple[Approver, Approver]
) -> None:
    alice, bob = two_approvers
    issued = world.issue(risk="high")
    once, _ = alice.approve(issued.data)
    with pytest.raises(DeniedError, match="already has this approval"):
        alice.approve(once)
    env = parse_bundle(once).envelope
    doubled = encoding.encode(
        [
            env.label,
            env.body,
            [list(s) for s in env.signatures] + [list(env.signatures[-1])],
        ]
    )
    exc = _refused(world, doubled, tmp_path)
    assert "needs 2 distinct approval(s); it has 1 (alice" in str(exc)
    both, _ = bob.approve(once)
    _run(world, both, tmp_path)


def test_approvals_by_other_keys_or_for_other_claims_do_not_count(
    world: World, tmp_path: Path, two_approvers: tuple[Approver, Approver]
) -> None:
    alice, _ = two_approvers
    issued = world.issue(risk="medium")
    env = parse_bundle(issued.data).envelope
    stranger = SigningKey.generate()  # not in the trust root
    by_stranger = encoding.encode(
        [
            env.label,
            env.body,
            [list(s) for s in env.signatures]
            + [[stranger.key_id, stranger.sign(env.label, env.body)]],
        ]
    )
    assert _refused(world, by_stranger, tmp_path).code == "approvals-missing"
    other, _ = alice.approve(world.issue(risk="medium").data)
    copied = parse_bundle(other).envelope.signatures[-1]
    transplanted = encoding.encode(
        [env.label, env.body, [list(s) for s in env.signatures] + [list(copied)]]
    )
    assert _refused(world, transplanted, tmp_path).code == "approvals-missing"
    assert world.uses() == []


def test_claims_carry_the_declared_approvals_for_hosts_with_an_old_root(
    world: World, tmp_path: Path
) -> None:
    """A host that never got the rotation still asks for the approvals the
    bundle's claims carry, and says why it cannot count any."""
    issued = world.issue(risk="medium")
    assert issued.claims.approvals == 0
    carol = _approver(world, tmp_path, "carol")  # rotations the host never gets
    _cosigned(world, [carol], approvals={"low": 0, "medium": 1, "high": 1})
    later = world.issue(risk="medium")
    assert later.claims.approvals == 1
    exc = _refused(world, later.data, tmp_path)
    assert exc.code == "approvals-missing" and "import a newer one" in str(exc)


def test_skipped_version_is_refused(world: World, tmp_path: Path) -> None:
    world.signer.rotate(T0)
    world.signer.rotate(T0)
    history = world.signer.root_history()
    del history["trust-root-v000002.kit"]
    usb = tmp_path / "usb"
    write_media(usb, history)
    host = world.host()
    try:
        with pytest.raises(FormatError, match="does not follow v1"):
            host.import_media(usb, now=T0)
        assert host.root.version == 1
    finally:
        host.close()


def test_root_signed_only_by_new_keys_is_refused(world: World, tmp_path: Path) -> None:
    thief = SigningKey.generate()
    current = world.signer.root
    forged = sign_trust_root(
        current.name,
        [KeySpec(thief.public_key, ("root", "issuer"), "thief")],
        [thief],
        version=current.version + 1,
        created_at=T0,
        expires_at=T0 + 365 * 24 * HOUR,
    )
    usb = tmp_path / "usb"
    write_media(usb, {"trust-root-v000002.kit": forged})
    host = world.host()
    try:
        with pytest.raises(UnauthenticatedError, match="needs 1 root signature"):
            host.import_media(usb, now=T0)
        assert host.root.version == 1
    finally:
        host.close()


def test_fork_and_rollback(world: World, tmp_path: Path) -> None:
    world.signer.rotate(T0)
    _carry_roots(world, tmp_path)  # host now at v2
    v1 = world.signer.root_history()["trust-root-v000001.kit"]
    old = tmp_path / "old"
    write_media(old, {"trust-root-v000001.kit": v1})
    host = world.host()
    try:
        host.import_media(old, now=T0)  # an older version changes nothing
        assert host.root.version == 2
    finally:
        host.close()
    other = sign_trust_root(
        world.signer.root.name,
        [KeySpec(world.signer.key.public_key, ("root", "issuer"), "again")],
        [world.signer.key],
        version=2,
        created_at=T0 + 5,
        expires_at=T0 + 365 * 24 * HOUR,
    )
    fork = tmp_path / "fork"
    write_media(fork, {"trust-root-v000002.kit": other})
    host = world.host()
    try:
        with pytest.raises(FormatError, match="is not the pinned one"):
            host.import_media(fork, now=T0)
    finally:
        host.close()


def test_bundles_by_removed_keys_are_refused_after_rotation(
    world: World, tmp_path: Path
) -> None:
    second = SigningKey.generate()
    world.signer.rotate(T0, add=(KeySpec(second.public_key, ("issuer",), "b"),))
    _carry_roots(world, tmp_path, "usb1")
    forged = world.forge(second)
    _run(world, forged.data, tmp_path / "x")
    world.signer.rotate(T0, remove=(second.key_id,))
    _carry_roots(world, tmp_path, "usb2")
    again = world.forge(second)
    with pytest.raises(Exception, match="not validly signed"):
        _run(world, again.data, tmp_path / "y")


def test_signer_cannot_remove_itself_or_add_twice(world: World) -> None:
    with pytest.raises(UsageError, match="its own root key"):
        world.signer.rotate(T0, remove=(world.signer.key.key_id,))
    k = SigningKey.generate()
    world.signer.rotate(T0, add=(KeySpec(k.public_key, ("approver",), "x"),))
    with pytest.raises(UsageError, match="already in trust root"):
        world.signer.rotate(T0, add=(KeySpec(k.public_key, ("approver",), "x"),))


def test_cli_approve_and_rotate(world: World, tmp_path: Path) -> None:
    a_home = tmp_path / "alice"
    init = world.kit(
        "approver",
        "init",
        "--label",
        "alice",
        "--trust",
        world.signer_home / "trust-root.kit",
        "--home",
        a_home,
        "--kdf",
        "interactive",
    )
    assert init.returncode == 0, init.stderr
    add = world.kit(
        "trust",
        "add-key",
        a_home / "approver.pub",
        "--role",
        "approver",
        "--home",
        world.signer_home,
    )
    assert add.returncode == 0, add.stderr
    need = world.kit("trust", "approvals", "--high", "1", "--home", world.signer_home)
    assert need.returncode == 0 and b"must co-sign it" in need.stderr
    candidate = world.signer_home / "trust-roots" / "candidate-v000003.kit"
    usb = tmp_path / "usb"
    export = world.kit("export", "--to", usb, "--home", world.signer_home)
    assert export.returncode == 0, export.stderr
    cosign = world.kit("approve", candidate, "--key", a_home, "--trust", usb, "--yes")
    assert cosign.returncode == 0 and b"co-signed trust root v3" in cosign.stderr
    install = world.kit("trust", "install", candidate, "--home", world.signer_home)
    assert install.returncode == 0, install.stderr
    export = world.kit("export", "--to", usb, "--home", world.signer_home)
    assert export.returncode == 0, export.stderr
    imp = world.kit("import", usb, "--home", world.host_home("build-01"))
    assert imp.returncode == 0 and b"pinned trust root v3" in imp.stderr
    (world.host_home("build-01") / "policy.toml").write_text(
        'environments = ["prod"]\nrisk_levels = ["low", "medium", "high"]\n'
    )
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue(risk="high").data)
    out = tmp_path / "out"
    run = world.kit(
        "run",
        bundle,
        "--task",
        TASK,
        "--yes",
        "--home",
        world.host_home("build-01"),
        "--",
        *child_argv(out),
    )
    assert run.returncode == 120 and b"[approvals-missing]" in run.stderr
    ok = world.kit(
        "approve",
        bundle,
        "--home",
        a_home,
        "--trust",
        usb,
        "--yes",
    )
    assert ok.returncode == 0, ok.stderr
    run = world.kit(
        "run",
        bundle,
        "--task",
        TASK,
        "--yes",
        "--home",
        world.host_home("build-01"),
        "--",
        *child_argv(out),
    )
    assert run.returncode == 0, run.stderr


def test_approver_refuses_what_it_cannot_vouch_for(
    world: World, tmp_path: Path, two_approvers: tuple[Approver, Approver]
) -> None:
    from kit.errors import UnauthenticatedError

    home = tmp_path / "newcomer"
    init_approver(
        home,
        "dave",
        PASSPHRASE,
        world.signer.root.envelope.raw,
        now=T0,
        kdf_profile="interactive",
    )
    dave = Approver(home)
    dave.unlock(PASSPHRASE)
    with pytest.raises(UsageError, match="not an approver in the pinned trust root"):
        dave.approve(world.issue(risk="medium").data)
    alice, _ = two_approvers
    thief = SigningKey.generate()
    current = world.signer.root
    forged = sign_trust_root(
        current.name,
        [KeySpec(thief.public_key, ("root", "issuer"), "thief")],
        [thief],
        version=current.version + 1,
        created_at=T0,
        expires_at=T0 + 365 * 24 * HOUR,
    )
    with pytest.raises(UnauthenticatedError):
        alice.approve_root(forged)
    with pytest.raises(UsageError, match="at least 1 h"):
        world.signer.propose(T0, ttl=0)


def test_root_threshold_is_not_met_by_one_key_twice() -> None:
    from kit.errors import UnauthenticatedError
    from kit.formats.trustroot import load_trust_root

    a, b = SigningKey.generate(), SigningKey.generate()
    keys = [
        KeySpec(a.public_key, ("root", "issuer"), "a"),
        KeySpec(b.public_key, ("root",), "b"),
    ]
    both = sign_trust_root(
        "two",
        keys,
        [a, b],
        version=1,
        created_at=T0,
        expires_at=T0 + HOUR,
        thresholds={"root": 2, "issuer": 1, "revoker": 1},
    )
    assert load_trust_root(both).thresholds["root"] == 2
    twice = sign_trust_root(
        "two",
        keys,
        [a, a],
        version=1,
        created_at=T0,
        expires_at=T0 + HOUR,
        thresholds={"root": 2, "issuer": 1, "revoker": 1},
    )
    with pytest.raises(UnauthenticatedError):
        load_trust_root(twice)


def test_root_signed_only_by_the_old_keys_is_refused(
    world: World, tmp_path: Path
) -> None:
    """A successor whose new root key did not sign it (a key nobody proved to
    hold) is refused, though the old root key did."""
    fresh = SigningKey.generate()
    current = world.signer.root
    old_only = sign_trust_root(
        current.name,
        [KeySpec(fresh.public_key, ("root", "issuer", "revoker"), "new")],
        [world.signer.key],
        version=current.version + 1,
        created_at=T0,
        expires_at=T0 + 365 * 24 * HOUR,
    )
    usb = tmp_path / "usb"
    write_media(usb, {"trust-root-v000002.kit": old_only})
    host = world.host()
    try:
        with pytest.raises(UnauthenticatedError, match="nothing imported"):
            host.import_media(usb, now=T0)
        assert host.root.version == 1
    finally:
        host.close()


def test_cli_trust_rotate(world: World, tmp_path: Path) -> None:
    a_home = tmp_path / "alice"
    init = world.kit(
        "approver",
        "init",
        "--label",
        "alice",
        "--trust",
        world.signer_home / "trust-root.kit",
        "--home",
        a_home,
        "--kdf",
        "interactive",
    )
    assert init.returncode == 0, init.stderr
    done = world.kit(
        "trust",
        "rotate",
        "--add",
        a_home / "approver.pub",
        "--role",
        "approver",
        "--ttl",
        "400d",
        "--home",
        world.signer_home,
    )
    assert done.returncode == 0, done.stderr
    assert b"adding alice" in done.stderr and b"v2 made and signed" in done.stderr
    assert world.kit("trust", "rotate", "--home", world.signer_home).returncode == 2


def test_bundle_needing_more_approvals_than_approvers_is_not_issued(
    world: World,
) -> None:
    from kit.signer.identity import load_identities
    from kit.signer.signer import IssueRequest

    shipped = Path(__file__).parents[1] / "bundles"
    [mig] = [
        i
        for i in load_identities(shipped, now=T0).identities
        if i.name == "nightly-migration-prod"
    ]
    assert mig.approvals == 1
    req = IssueRequest(
        host="build-01",
        env=mig.environment,
        task=mig.task,
        commands=mig.commands,
        ttl=60,
        max_uses=1,
        secret_name="KIT_SECRET",
        owner=mig.owner,
        datasets=mig.datasets,
        risk=mig.risk,
        delivery=mig.delivery,
        identity=mig,
    )
    with pytest.raises(UsageError, match="names 0 approver key"):
        world.signer.issue(req, b"tok", T0)
    assert world.signer.ledger.bundles() == []


def test_missing_approvals_denial_names_the_bundle(
    world: World, tmp_path: Path, two_approvers: tuple[Approver, Approver]
) -> None:
    issued = world.issue(risk="medium")
    assert _refused(world, issued.data, tmp_path).code == "approvals-missing"
    last = world.receipts()[-1]
    assert (last.reason, last.bundle_id) == (
        "approvals-missing",
        issued.claims.bundle_id,
    )


def test_prepare_signs_nothing_and_sign_signs_exactly_what_was_prepared(
    world: World, two_approvers: tuple[Approver, Approver]
) -> None:
    """kit approve shows what prepare() returns before anything is signed;
    sign() then adds a signature over that envelope as it is, and over
    nothing that prepare() did not check and return to this approver."""
    alice, bob = two_approvers
    issued = world.issue(risk="medium")
    pending = alice.prepare(issued.data)
    assert pending.claims == issued.claims and pending.root is None
    body = parse_bundle(issued.data).envelope.body
    assert pending.envelope.body == body  # what is shown is what will be signed
    approved = alice.sign(pending)
    env = parse_bundle(approved).envelope
    assert env.body == body
    assert [kid for kid, _ in env.signatures] == [
        world.signer.key.key_id,
        alice.key.key_id,
    ]
    with pytest.raises(UsageError, match="sign only what prepare"):
        alice.sign(pending)  # one signature per check
    with pytest.raises(UsageError, match="sign only what prepare"):
        alice.sign(bob.prepare(issued.data))  # checked by someone else
    unchecked = Pending(parse_bundle(world.forge(SigningKey.generate()).data).envelope)
    with pytest.raises(UsageError, match="sign only what prepare"):
        alice.sign(unchecked)  # never checked against the issuer keys
    # While something else is prepared (not only after a signature reset it),
    # an object prepare() did not return is still refused.
    other = world.issue(risk="medium")
    held = alice.prepare(other.data)
    with pytest.raises(UsageError, match="sign only what prepare"):
        alice.sign(unchecked)
    with pytest.raises(UsageError, match="sign only what prepare"):
        alice.sign(Pending(held.envelope, held.claims))  # equal, not the same
    assert parse_bundle(alice.sign(held)).envelope.body == held.envelope.body
    with pytest.raises(DeniedError, match="already has this approval"):
        alice.prepare(approved)
    data, _, _ = world.signer.propose(T0, approvals={"low": 0, "medium": 1, "high": 2})
    candidate = alice.prepare(data)
    assert candidate.root is not None and candidate.claims is None
    assert candidate.root.version == alice.root.version + 1
    cosigned = alice.sign(candidate)
    assert (
        encoding.decode(cosigned, cap=1 << 16, what="r")[1] == candidate.envelope.body
    )
