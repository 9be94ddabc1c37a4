"""The host's promises under a wrong clock, a hostile policy file and a
damaged journal (issue 4): each test provokes the fault and checks that
nothing was released and nothing was lost."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import KIT, T0, World, child_argv

from kit.errors import DeniedError, FormatError, HomeError, JournalError
from kit.host.policy import FILE as POLICY_FILE
from kit.media import write_media

HOUR = 3600


def _policy(world: World, text: str, host: str = "build-01") -> None:
    (world.host_home(host) / POLICY_FILE).write_text(text)


def _deny(world: World, data: bytes, now: int, out: Path) -> DeniedError:
    host = world.host()
    try:
        with pytest.raises(DeniedError) as caught:
            host.authorize(
                data, task="nightly-export", command=child_argv(out), now=now
            )
    finally:
        host.close()
    assert not out.exists()
    return caught.value


def _release(world: World, data: bytes, now: int, out: Path) -> None:
    host = world.host()
    try:
        host.authorize(data, task="nightly-export", command=child_argv(out), now=now)
    finally:
        host.close()


def _floor(world: World) -> int:
    host = world.host()
    try:
        return host.state.floor()
    finally:
        host.close()


def test_clock_behind_floor_refuses_every_release(world: World, tmp_path: Path) -> None:
    _release(world, world.issue().data, T0, tmp_path / "a")
    assert _floor(world) >= T0
    late = world.issue(now=T0 - 2 * HOUR, ttl=4 * HOUR, max_uses=3)
    exc = _deny(world, late.data, T0 - HOUR, tmp_path / "b")
    assert exc.code == "clock-behind-floor"
    assert "60 min (3600 s) behind its floor" in str(exc)
    last = world.receipts()[-1]
    assert (last.event, last.reason) == ("deny", "clock-behind-floor")
    assert world.uses()[-1][0] != late.claims.bundle_id  # nothing consumed
    assert _floor(world) >= T0  # the floor never goes down


def test_floor_rises_with_issued_at_of_accepted_bundles(
    world: World, tmp_path: Path
) -> None:
    issued = world.issue(now=T0 + 20)  # within the 30 s leeway of T0
    _release(world, issued.data, T0, tmp_path / "a")
    assert _floor(world) == T0 + 20


def test_bundle_from_the_future_is_refused_with_the_offset(
    world: World, tmp_path: Path
) -> None:
    future = world.issue(now=T0 + 600)
    exc = _deny(world, future.data, T0, tmp_path / "out")
    assert exc.code == "from-the-future"
    assert "host clock behind or bundle from the future" in str(exc)
    assert "10 min (600 s) ahead" in str(exc)


@pytest.mark.parametrize(
    ("leeway", "late", "allowed"), [(0, 1, False), (300, 200, True), (300, 301, False)]
)
def test_leeway_from_policy_applies_to_expiry(
    world: World, tmp_path: Path, leeway: int, late: int, allowed: bool
) -> None:
    _policy(world, f'environments = ["prod"]\nleeway = {leeway}\n')
    issued = world.issue(now=T0 - HOUR, ttl=HOUR)
    if allowed:
        _release(world, issued.data, T0 + late, tmp_path / "out")
    else:
        assert _deny(world, issued.data, T0 + late, tmp_path / "out").code == "expired"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('environments = ["prod"]\nleeway = 301\n', "leeway must be an integer"),
        ('environments = ["prod"]\nleeway = true\n', "leeway must be an integer"),
        ('environments = ["prod"]\nmax_uses = 0\n', "max_uses must be"),
        ('environments = ["prod"]\nmax_lifetime = "forever"\n', "max_lifetime"),
        ("environments = []\n", "environments must be a non-empty list"),
        ('environments = ["prod"]\nrisk = "any"\n', "unknown key(s) risk"),
        ("environments = [", "policy.toml"),
    ],
)
def test_invalid_policy_stops_the_host(world: World, text: str, message: str) -> None:
    _policy(world, text)
    with pytest.raises(
        HomeError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        world.host()


def test_missing_policy_stops_the_host_and_the_cli(
    world: World, tmp_path: Path
) -> None:
    (world.host_home("build-01") / POLICY_FILE).unlink()
    with pytest.raises(HomeError, match="restore it"):
        world.host()
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue().data)
    out = tmp_path / "out"
    done = world.kit(
        "run",
        bundle,
        "--task",
        "nightly-export",
        "--home",
        world.host_home("build-01"),
        "--",
        *child_argv(out),
    )
    assert done.returncode == 123
    assert b"policy.toml" in done.stderr and not out.exists()


def test_policy_caps_lifetime_uses_and_environments(
    world: World, tmp_path: Path
) -> None:
    _policy(world, 'environments = ["prod"]\nmax_lifetime = "1h"\nmax_uses = 2\n')
    long = world.issue(ttl=2 * HOUR)
    exc = _deny(world, long.data, T0, tmp_path / "a")
    assert exc.code == "lifetime-over-cap" and "max_lifetime 60 min" in str(exc)
    many = world.issue(max_uses=3)
    exc = _deny(world, many.data, T0, tmp_path / "b")
    assert exc.code == "uses-over-cap" and "max_uses 2" in str(exc)
    _policy(world, 'environments = ["staging"]\n')
    exc = _deny(world, world.issue().data, T0, tmp_path / "c")
    assert exc.code == "wrong-env" and "policy serves (staging)" in str(exc)


def test_journal_with_deleted_receipts_is_refused(world: World, tmp_path: Path) -> None:
    _release(world, world.issue(max_uses=5).data, T0, tmp_path / "a")
    _deny(world, world.issue(task="other").data, T0, tmp_path / "b")
    db = sqlite3.connect(world.host_home("build-01") / "state.db")
    db.execute("DELETE FROM receipts WHERE seq = 2")
    db.commit()
    db.close()
    host = world.host()
    try:
        with pytest.raises(JournalError, match="behind its own counter"):
            host.authorize(
                world.issue().data,
                task="nightly-export",
                command=child_argv(tmp_path / "c"),
                now=T0,
            )
        with pytest.raises(JournalError, match="behind its own counter"):
            host.export_receipts(tmp_path / "media", T0)
    finally:
        host.close()
    assert not (tmp_path / "c").exists()


def test_damaged_last_receipt_is_refused(world: World, tmp_path: Path) -> None:
    _release(world, world.issue().data, T0, tmp_path / "a")
    db = sqlite3.connect(world.host_home("build-01") / "state.db")
    db.execute("UPDATE receipts SET raw = CAST(raw || x'00' AS BLOB) WHERE seq = 1")
    db.commit()
    db.close()
    host = world.host()
    try:
        with pytest.raises(JournalError, match="damaged"):
            host.state.check_journal()
    finally:
        host.close()


def test_read_only_journal_releases_nothing(world: World, tmp_path: Path) -> None:
    if subprocess.run(["unshare", "-m", "true"], check=False).returncode != 0:
        pytest.skip("needs root for a private mount namespace (unshare -m)")
    home = world.host_home("build-01")
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue().data)
    out = tmp_path / "out"
    script = (
        f'mount --bind "{home}" "{home}" && '
        f'mount -o remount,bind,ro "{home}" && exec "$@"'
    )
    run = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            script,
            "sh",
            str(KIT),
            "run",
            str(bundle),
            "--task",
            "nightly-export",
            "--home",
            str(home),
            "--",
            *child_argv(out),
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 124, run.stderr
    assert b"nothing was released" in run.stderr
    assert not out.exists()
    assert world.uses() == []


def test_shifted_clock_of_a_real_kit_run_is_refused(
    world: World, tmp_path: Path
) -> None:
    if shutil.which("faketime") is None:
        pytest.fail("faketime is missing: run scripts/sysdeps.sh (make test does)")
    home = world.host_home("build-01")
    first = tmp_path / "first.kit"
    first.write_bytes(world.issue().data)
    done = world.kit(
        "run",
        first,
        "--task",
        "nightly-export",
        "--home",
        home,
        "--",
        *child_argv(tmp_path / "a"),
    )
    assert done.returncode == 0, done.stderr
    second = tmp_path / "second.kit"
    second.write_bytes(world.issue(now=T0 - 3 * HOUR, ttl=6 * HOUR).data)
    out = tmp_path / "b"
    shifted = subprocess.run(
        [
            "faketime",
            "-f",
            "-2h",
            str(KIT),
            "run",
            str(second),
            "--task",
            "nightly-export",
            "--home",
            str(home),
            "--",
            *child_argv(out),
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert shifted.returncode == 120, shifted.stderr
    assert b"clock-behind-floor" in shifted.stderr
    assert not out.exists()
    assert world.receipts()[-1].reason == "clock-behind-floor"


def test_host_status_reports_state_and_problems(world: World, tmp_path: Path) -> None:
    home = world.host_home("build-01")
    bare = world.kit("host", "status", "--home", home, "--json")
    assert bare.returncode == 1  # no revocation list yet
    assert json.loads(bare.stdout)["problems"] == [
        "no revocation list yet: import one (kit export carries it)"
    ]
    now = int(time.time())
    write_media(
        tmp_path / "rl",
        {"revocations.kit": world.signer.revocation_list(now, 24 * HOUR)},
    )
    host = world.host()
    try:
        host.import_media(tmp_path / "rl", now=now)
    finally:
        host.close()
    issued = world.issue(max_uses=2)
    (home / "inbox" / f"{issued.claims.bundle_id}.kit").write_bytes(issued.data)
    _release(world, issued.data, T0, tmp_path / "a")
    done = world.kit("host", "status", "--home", home, "--json")
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    assert st["revocations"]["version"] == 1
    assert st["host"] == "build-01" and st["env"] == "prod"
    assert st["staged"] == [
        {
            "bundle_id": issued.claims.bundle_id,
            "task": "nightly-export",
            "env": "prod",
            "expires_at": issued.claims.expires_at,
            "expired": False,
            "uses_left": 1,
            "max_uses": 2,
        }
    ]
    assert st["receipts"] == {"last_seq": 1, "exported_seq": 0, "not_exported": 1}
    assert st["clock"]["floor"] >= T0 and st["problems"] == []

    db = sqlite3.connect(home / "state.db")
    db.execute("DELETE FROM receipts")
    db.commit()
    db.close()
    done = world.kit("host", "status", "--home", home)
    assert done.returncode == 1
    assert b"PROBLEM" in done.stdout and b"behind its own counter" in done.stdout


def test_issuer_claim_must_name_the_signing_key(world: World, tmp_path: Path) -> None:
    forged = world.forge(world.signer.key, issuer="0" * 32)  # genuine signature
    exc = _deny(world, forged.data, T0, tmp_path / "out")
    assert exc.code == "issuer-mismatch"
    assert "signed by" in str(exc)
    assert world.receipts()[-1].reason == "issuer-mismatch"


def test_expired_trust_root_refuses_every_release(world: World, tmp_path: Path) -> None:
    host = world.host()
    expiry = host.root.expires_at
    host.close()
    late = world.issue(now=expiry + 10)
    exc = _deny(world, late.data, expiry + 20, tmp_path / "out")
    assert exc.code == "trust-root-expired"
    assert "expired 20 s ago" in str(exc)
    assert "kit import here" in str(exc)  # the fix it names is the one below
    # The signer renews; the host imports the renewed root and is whole again.
    renewed, _, quorum = world.signer.propose(expiry + 30, ttl=400 * 86400)
    assert quorum == 0
    world.signer.install(renewed)
    host = world.host()
    try:
        result = host.import_files(
            tmp_path, world.signer.root_history(), now=expiry + 40
        )
        assert result.pinned and host.root.expires_at > expiry + 50
    finally:
        host.close()
    _release(world, late.data, expiry + 50, tmp_path / "out")
    last = world.receipts()[-1]
    assert (last.event, last.bundle_id) == ("release", late.claims.bundle_id)


def test_refusals_never_raise_the_clock_floor(world: World, tmp_path: Path) -> None:
    """A run with the clock far ahead that is refused leaves the floor alone,
    so a one-off clock glitch cannot lock the host out."""
    _release(world, world.issue().data, T0, tmp_path / "a")
    floor = _floor(world)
    host = world.host()
    try:
        with pytest.raises(FormatError):
            host.authorize(
                b"not a bundle",
                task="nightly-export",
                command=child_argv(tmp_path / "b"),
                now=T0 + 30 * 24 * HOUR,
            )
    finally:
        host.close()
    _deny(world, world.issue(task="other").data, T0 + 5 * HOUR, tmp_path / "c")
    assert _floor(world) == floor
    _release(world, world.issue(now=T0 + 60).data, T0 + 60, tmp_path / "d")
