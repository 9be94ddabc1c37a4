"""The signer: its key at rest, enrollment and the refusals of issuance."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from conftest import PASSPHRASE, T0, World
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kit.crypto.seal import SealingKey, seal
from kit.crypto.sign import SigningKey
from kit.errors import (
    DeniedError,
    FormatError,
    HomeError,
    UnauthenticatedError,
    UsageError,
)
from kit.formats.enrollment import Enrollment, make_enrollment
from kit.host.host import init_host
from kit.signer.signer import DIGEST_INFO, KEY_FILE, Signer


def _issue_args(world: World, tmp_path: Path, **over: str) -> list[str | Path]:
    secret = tmp_path / "token.txt"
    secret.write_bytes(b"cli-secret-0123456789abcdef\n")
    opts = {
        "--host": "build-01",
        "--env": "prod",
        "--task": "nightly-export",
        "--ttl": "1h",
        "--command": "true",
        "--secret-file": str(secret),
        "--home": str(world.signer_home),
    } | over
    return ["issue", *[x for kv in opts.items() for x in kv]]


def _bundle_ids(world: World) -> list[str]:
    s = Signer(world.signer_home)
    try:
        return [b.bundle_id for b in s.ledger.bundles()]
    finally:
        s.close()


# -- the key at rest ------------------------------------------------------------


def test_wrong_passphrase_is_refused(world: World, tmp_path: Path) -> None:
    s = Signer(world.signer_home)
    try:
        with pytest.raises(HomeError, match="passphrase"):
            s.unlock(b"wrong " + PASSPHRASE)
        with pytest.raises(HomeError, match="locked"):
            _ = s.key
        s.unlock(PASSPHRASE)  # and the right one opens it
    finally:
        s.close()

    wrong = tmp_path / "wrong-pass"
    wrong.write_bytes(b"not the passphrase\n")
    proc = world.kit(*_issue_args(world, tmp_path), passfile=wrong)
    assert proc.returncode == 5, proc.stderr
    assert b"passphrase" in proc.stderr
    assert b"cli-secret" not in proc.stdout + proc.stderr
    assert _bundle_ids(world) == []


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_file_readable_by_others_is_refused(
    world: World, tmp_path: Path, mode: int
) -> None:
    (world.signer_home / KEY_FILE).chmod(mode)
    s = Signer(world.signer_home)
    try:
        with pytest.raises(HomeError, match=f"mode {mode:o}"):
            s.unlock(PASSPHRASE)  # the right passphrase: the mode alone refuses
    finally:
        s.close()
    if mode == 0o644:
        proc = world.kit(*_issue_args(world, tmp_path))
        assert proc.returncode == 5, proc.stderr
        assert b"chmod 600" in proc.stderr
        assert _bundle_ids(world) == []


def test_symlinked_key_file_is_refused(world: World) -> None:
    key = world.signer_home / KEY_FILE
    moved = world.root / "signer.key.real"
    key.rename(moved)
    key.symlink_to(moved)
    s = Signer(world.signer_home)
    try:
        with pytest.raises(HomeError, match="not a regular file"):
            s.unlock(PASSPHRASE)
    finally:
        s.close()


# -- issuance refusals ------------------------------------------------------------


def test_issue_for_an_env_the_host_is_not_enrolled_for(
    world: World, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="enrolled for env 'prod', not 'dev'"):
        world.issue("build-01", env="dev")
    with pytest.raises(UsageError, match="enrolled for env 'dev'"):
        world.issue("build-03", env="prod")
    assert world.signer.ledger.bundles() == []
    proc = world.kit(*_issue_args(world, tmp_path, **{"--env": "dev"}))
    assert proc.returncode == 2, proc.stderr
    assert _bundle_ids(world) == []


def test_issue_for_an_unknown_host(world: World, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not enrolled"):
        world.issue("build-99", env="prod")
    assert world.signer.ledger.bundles() == []
    proc = world.kit(*_issue_args(world, tmp_path, **{"--host": "build-99"}))
    assert proc.returncode == 2, proc.stderr
    assert b"not enrolled" in proc.stderr
    assert _bundle_ids(world) == []


# -- what the ledger keeps ---------------------------------------------------------


def _files(home: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}


def test_ledger_keeps_a_keyed_digest_and_no_secret(
    world: World, tmp_path: Path
) -> None:
    secrets = [b"hunter2", b"s3cr3t-" + bytes(range(48, 122)), b"x"]
    issued = [world.issue(secret=s) for s in secrets]
    world.signer.close()
    world._signer = None  # let everything reach the disk before reading files
    for path, data in _files(world.signer_home).items():
        for s in secrets:
            if len(s) >= 4:  # a 1-byte secret appears everywhere by chance
                assert s not in data, f"secret in clear in {path}"
                assert s.hex().encode() not in data, f"secret in hex in {path}"
    seed = world.signer.key.seed_unsafe()
    mac_key = HKDF(hashes.SHA256(), 32, salt=None, info=DIGEST_INFO).derive(seed)
    for i in issued:
        rec = world.signer.ledger.get_bundle(i.claims.bundle_id)
        assert rec is not None
        assert rec.secret_digest != hashlib.sha256(i.secret).digest()
        assert rec.secret_digest == hmac.new(mac_key, i.secret, "sha256").digest()
    # Keyed per signer: another signer's digest of the same secret differs.
    other = world.issue(secret=secrets[0], by=world.attacker)
    rec = world.attacker.ledger.get_bundle(other.claims.bundle_id)
    first = world.signer.ledger.get_bundle(issued[0].claims.bundle_id)
    assert rec is not None and first is not None
    assert rec.secret_digest != first.secret_digest


def test_cli_issue_leaves_no_secret_on_disk(world: World, tmp_path: Path) -> None:
    proc = world.kit(*_issue_args(world, tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert b"cli-secret" not in proc.stdout + proc.stderr
    assert len(_bundle_ids(world)) == 1
    for path, data in _files(world.signer_home).items():
        assert b"cli-secret" not in data, f"secret in clear in {path}"


# -- enrollment ------------------------------------------------------------------


def test_enrollment_pinning_another_root_is_refused(
    world: World, tmp_path: Path
) -> None:
    foreign_root = (world.attacker_home / "trust-root.kit").read_bytes()
    request, _ = init_host(tmp_path / "stray", "stray-01", "prod", foreign_root, T0)
    before = world.signer.ledger.hosts()
    with pytest.raises(DeniedError, match="pinned a different trust root"):
        world.signer.enroll(request, T0)
    assert world.signer.ledger.hosts() == before
    proc = world.kit(
        "enroll", tmp_path / "stray" / "enrollment.kit", "--home", world.signer_home
    )
    assert proc.returncode == 1, proc.stderr
    assert world.signer.ledger.get_host("stray-01") is None


def test_double_enrollment_is_refused(world: World, tmp_path: Path) -> None:
    original = world.host_record("build-01")
    request = (world.host_home("build-01") / "enrollment.kit").read_bytes()
    with pytest.raises(DeniedError, match="already enrolled"):
        world.signer.enroll(request, T0)
    # A new home claiming the same name (new keys) must not replace the old one.
    imposter, _ = init_host(tmp_path / "imp", "build-01", "dev", world.root_bytes, T0)
    with pytest.raises(DeniedError, match="already enrolled"):
        world.signer.enroll(imposter, T0)
    assert world.host_record("build-01") == original
    proc = world.kit(
        "enroll", tmp_path / "imp" / "enrollment.kit", "--home", world.signer_home
    )
    assert proc.returncode == 1, proc.stderr
    assert world.host_record("build-01") == original


def test_tampered_enrollment_is_refused(world: World, tmp_path: Path) -> None:
    request, _ = init_host(tmp_path / "new", "build-04", "prod", world.root_bytes, T0)
    tampered = request.replace(b"\xa4prod", b"\xa4devx", 1)  # env "prod" -> "devx"
    assert tampered != request
    for bad in (
        tampered,
        request[:-1],
        request[:60] + bytes([request[60] ^ 0x10]) + request[61:],
    ):
        with pytest.raises((FormatError, UnauthenticatedError)):
            world.signer.enroll(bad, T0)
    assert world.signer.ledger.get_host("build-04") is None
    assert world.signer.enroll(request, T0).host == "build-04"


def test_same_keys_under_another_name_are_refused(world: World) -> None:
    home = world.host_home("build-01")
    rkey = SigningKey((home / "receipt.key").read_bytes())
    hpke = SealingKey((home / "hpke.key").read_bytes())
    request = make_enrollment(
        Enrollment(
            "build-99",
            "prod",
            hpke.public_key,
            rkey.public_key,
            hashlib.sha256(world.root_bytes).digest(),
            T0,
        ),
        rkey,
    )
    with pytest.raises(DeniedError, match="already enrolled as host build-01"):
        world.signer.enroll(request, T0)
    assert world.signer.ledger.get_host("build-99") is None


@pytest.mark.parametrize("point", [bytes(32), b"\x01" + bytes(31)], ids=["zero", "one"])
def test_a_low_order_hpke_key_is_refused_at_enrollment(
    world: World, point: bytes
) -> None:
    """A key every shared secret with is zero can be sealed to by no one:
    refused when enrolled, naming it, and never an internal error later."""
    rkey = SigningKey.generate()
    request = make_enrollment(
        Enrollment("evil-01", "prod", point, rkey.public_key,
                   hashlib.sha256(world.root_bytes).digest(), T0),
        rkey,
    )  # fmt: skip
    with pytest.raises(FormatError, match="not a usable X25519 key"):
        world.signer.enroll(request, T0)
    assert world.signer.ledger.get_host("evil-01") is None
    with pytest.raises(FormatError, match="not a usable X25519 key"):
        seal(b"s", point, b"info")  # a ledger enrolled before this check


def test_databases_are_private(world: World) -> None:
    for db in (
        world.signer_home / "ledger.db",
        world.host_home("build-01") / "state.db",
    ):
        assert db.stat().st_mode & 0o777 == 0o600


def test_a_bundle_outliving_the_trust_root_is_warned_of(world: World) -> None:
    """Hosts will refuse it once the root expires: said, not refused."""
    world.signer.warnings.clear()
    root_expiry = world.signer.root.expires_at
    world.issue(now=root_expiry - 600, ttl=3600)
    (warning,) = world.signer.warnings
    assert "after the trust root expires" in warning and "kit trust renew" in warning
    world.signer.warnings.clear()
    world.issue(now=root_expiry - 7200, ttl=3600)
    assert world.signer.warnings == []


@pytest.mark.parametrize("existed", [False, True], ids=["new", "empty-folder"])
def test_an_interrupted_init_leaves_no_half_home(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existed: bool
) -> None:
    """Ctrl-C (or a full disk) during kit signer init / kit host init removes
    what it wrote: the same init then simply runs again."""
    import kit.host.host as host_mod
    import kit.signer.signer as signer_mod

    home = tmp_path / "S"
    if existed:
        home.mkdir()

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(signer_mod, "SqliteLedger", interrupted)
    with pytest.raises(KeyboardInterrupt):
        signer_mod.init_signer(home, "acme", b"pw", now=T0, kdf_profile="interactive")
    assert (list(home.iterdir()) == []) if existed else not home.exists()
    monkeypatch.undo()
    signer_mod.init_signer(home, "acme", b"pw", now=T0, kdf_profile="interactive")
    assert (home / "KIT-HOME").read_text() == "signer\n"

    host = tmp_path / "H"
    monkeypatch.setattr(host_mod, "SqliteHostState", interrupted)
    with pytest.raises(KeyboardInterrupt):
        host_mod.init_host(host, "build-09", "prod", world.root_bytes, T0)
    assert not host.exists()


def test_export_leaves_out_revoked_retired_and_used_up_bundles(
    world: World, tmp_path: Path
) -> None:
    """Hosts would refuse them; the stick carries what is still usable, and
    says how many it left out. A bundle named on the command line goes."""
    keep = world.issue()
    revoked = world.issue()
    spent = world.issue()
    world.signer.revoke([("bundle", revoked.claims.bundle_id)], T0)
    world.signer.ledger.record_usage(spent.claims.bundle_id, 1, T0)
    other_host = world.issue("build-02")
    world.signer.revoke([("host", "build-02")], T0)
    for issued in (keep, revoked, spent, other_host):  # as kit issue leaves it
        world.signer.outbox_path(issued.claims.bundle_id).write_bytes(issued.data)
    ids, gone, used = world.signer.exportable(T0)
    assert (ids, gone, used) == ([keep.claims.bundle_id], 2, 1)
    world.close()
    world._signer = None
    usb = tmp_path / "usb"
    proc = world.kit("export", "--home", world.signer_home, "--to", usb)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "exported 1 bundle(s)" in err
    assert "left out 2 revoked or retired and 1 used-up bundle(s)" in err
    assert sorted(p.name for p in usb.glob("bundle-*")) == [
        f"bundle-{keep.claims.bundle_id}.kit"
    ]
    named = world.signer_home / "outbox" / f"{other_host.claims.bundle_id}.kit"
    proc = world.kit("export", "--home", world.signer_home, "--to", usb, named)
    assert proc.returncode == 0, proc.stderr
    assert (usb / f"bundle-{other_host.claims.bundle_id}.kit").exists()
