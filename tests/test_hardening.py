"""Refusals found by playing the attacker against a fresh checkout: each feeds
the hostile input and checks the refusal, the exit code, and that nothing was
released or consumed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import T0, TASK, World, child_argv

from kit.errors import FormatError, HomeError, UsageError
from kit.host import runner
from kit.host.runner import Delivery, make_delivery, run_child
from kit.media import write_media


def _bundle_file(world: World, tmp_path: Path, **kw: object) -> Path:
    path = tmp_path / "b.kit"
    path.write_bytes(world.issue(**kw).data)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    "name", ["LD_PRELOAD", "PYTHONPATH", "BASH_ENV", "NODE_OPTIONS", "BAD=NAME", "1X"]
)
def test_keep_env_refuses_code_injection_variables(
    world: World, tmp_path: Path, name: str
) -> None:
    bundle = _bundle_file(world, tmp_path)
    out = tmp_path / "out"
    proc = world.kit(
        "run",
        bundle,
        "--task",
        TASK,
        "--home",
        world.host_home("build-01"),
        "--keep-env",
        name,
        "--",
        *child_argv(out),
    )
    assert proc.returncode == 2, proc.stderr
    assert b"--keep-env" in proc.stderr
    assert not out.exists() and world.uses() == []
    with pytest.raises(UsageError):
        make_delivery("env", (name,))
    with pytest.raises(UsageError):  # and unchecked, before the child starts
        run_child(("/bin/true",), "S", b"s", Delivery("env", (name,)))


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PATH", "PYTHONSTARTUP", "HOME"])
def test_secret_name_may_not_be_a_loader_variable(world: World, name: str) -> None:
    with pytest.raises(UsageError, match="reserved"):
        world.issue(secret_name=name)
    forged = world.forge(world.signer.key, secret_name=name)  # genuinely signed
    host = world.host()
    try:
        with pytest.raises(FormatError, match="reserved"):
            host.authorize(forged.data, task=TASK, command=("sh",), now=T0)
    finally:
        host.close()
    assert world.receipts()[-1].reason == "malformed"


def test_swapped_trust_root_in_the_host_home_is_refused(
    world: World, tmp_path: Path
) -> None:
    home = world.host_home("build-01")
    (home / "trust-root.kit").write_bytes(
        (world.attacker_home / "trust-root.kit").read_bytes()
    )
    with pytest.raises(HomeError, match="not the trust root pinned at host init"):
        world.host()
    bundle = tmp_path / "evil.kit"
    bundle.write_bytes(world.issue(by=world.attacker).data)
    out = tmp_path / "out"
    proc = world.kit(
        "run", bundle, "--task", TASK, "--home", home, "--", *child_argv(out)
    )
    assert proc.returncode == 123 and not out.exists()


@pytest.mark.parametrize(
    ("target", "mode"),
    [
        (".", 0o777),
        ("state.db", 0o666),
        ("trust-root.kit", 0o666),
        ("policy.toml", 0o666),
    ],
)
def test_host_files_others_can_write_are_refused(
    world: World, target: str, mode: int
) -> None:
    path = world.host_home("build-01") / target
    os.chmod(path, mode)
    with pytest.raises(HomeError, match=r"must not be|restore it"):
        world.host()


@pytest.mark.parametrize("problem", ["readable", "empty", "missing", "directory"])
def test_passphrase_file_problems_are_home_errors(
    world: World, tmp_path: Path, problem: str
) -> None:
    passfile = tmp_path / "pass"
    if problem == "readable":
        passfile.write_bytes(b"correct horse battery staple\n")
        passfile.chmod(0o644)
    elif problem == "empty":
        passfile.write_bytes(b"")
        passfile.chmod(0o600)
    elif problem == "directory":
        passfile.mkdir()
    secret = tmp_path / "s"
    secret.write_bytes(b"tok")
    proc = world.kit(
        "issue",
        "--host",
        "build-01",
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
        world.signer_home,
        passfile=passfile,
    )
    assert proc.returncode == 5, proc.stderr
    assert b"passphrase file" in proc.stderr


def test_file_delivery_left_by_a_killed_kit_is_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "TMPFS", tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"kit-{dead.pid}-abc"
    stale.mkdir(mode=0o700)
    (stale / "secret").write_bytes(b"left-behind")
    alive = tmp_path / f"kit-{os.getpid()}-xyz"
    alive.mkdir(mode=0o700)
    status, _ = run_child(("/bin/true",), "S", b"new", Delivery("file"))
    assert status == 0
    assert not stale.exists()
    assert alive.exists()  # a running kit's folder is left alone


def test_import_skips_receipts_and_other_hosts_bundles(
    world: World, tmp_path: Path
) -> None:
    mine, theirs = world.issue(), world.issue("build-02")
    usb = tmp_path / "usb"
    write_media(
        usb,
        {
            "trust-root.kit": world.root_bytes,
            f"bundle-{mine.claims.bundle_id}.kit": mine.data,
            f"bundle-{theirs.claims.bundle_id}.kit": theirs.data,
            "receipts-build-01-0000000001-0000000001.kit": b"\x93",
        },
    )
    proc = world.kit("import", usb, "--home", world.host_home("build-01"))
    assert proc.returncode == 0, proc.stderr
    assert b"imported 1 bundle(s)" in proc.stderr
    assert b"(for host build-02)" in proc.stderr
    assert b"(a receipt batch, for the signer)" in proc.stderr
    inbox = world.host_home("build-01") / "inbox"
    assert [p.name for p in inbox.iterdir()] == [f"{mine.claims.bundle_id}.kit"]


def test_foreign_trust_root_on_media_is_named(world: World, tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    write_media(
        usb, {"trust-root.kit": (world.attacker_home / "trust-root.kit").read_bytes()}
    )
    proc = world.kit("import", usb, "--home", world.host_home("build-01"))
    assert proc.returncode == 3  # as kit trust install of the same root
    assert (
        b"is not the pinned one" in proc.stderr and b"nothing imported" in proc.stderr
    )


def test_bad_cli_values_are_usage_or_media_errors(world: World, tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_bytes(b"tok")
    base = (
        "issue",
        "--host",
        "build-01",
        "--env",
        "prod",
        "--task",
        TASK,
        "--ttl",
        "1h",
        "--secret-file",
        secret,
        "--home",
        world.signer_home,
    )
    huge = world.kit(*base, "--command", "sh", "--max-uses", str(2**64))
    assert huge.returncode == 2, huge.stderr
    bad = world.kit(*base, "--command", os.fsdecode(b"py\xffthon"))
    assert bad.returncode == 2, bad.stderr
    reserved = world.kit(*base, "--command", "sh", "--secret-name", "LD_PRELOAD")
    assert reserved.returncode == 2 and b"reserved" in reserved.stderr
    afile = tmp_path / "a-file"
    afile.write_text("x")
    export = world.kit("export", "--to", afile, "--home", world.signer_home)
    assert export.returncode == 4, export.stderr
    for proc in (huge, bad, reserved, export):
        assert b"Traceback" not in proc.stderr
        assert b"internal error" not in proc.stderr
    assert world.signer.ledger.bundles() == []


def test_program_that_cannot_start_is_reported(world: World, tmp_path: Path) -> None:
    script = tmp_path / "job"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue(commands=((str(script),),)).data)
    proc = world.kit(
        "run",
        bundle,
        "--task",
        TASK,
        "--home",
        world.host_home("build-01"),
        "--",
        str(script),
    )
    assert proc.returncode == 127
    assert b"could not be started" in proc.stderr and b"the use is spent" in proc.stderr
    assert [r.event for r in world.receipts()] == ["release", "exit"]
    assert world.receipts()[-1].exit_status == 127


def test_receipt_with_a_huge_seq_does_not_stall_the_auditor(
    world: World, tmp_path: Path
) -> None:
    """A host could sign a receipt numbered 2**62; reconcile must still finish
    at once and report the gap."""
    import time as clock

    from kit.audit.reconcile import load_batches, reconcile
    from kit.crypto.sign import SigningKey as Key
    from kit.formats import receipt as rfmt

    key = Key((world.host_home("build-01") / "receipt.key").read_bytes())
    r = rfmt.Receipt(
        host="build-01",
        seq=2**62,
        prev=bytes(32),
        time=T0,
        event="deny",
        action="run",
        bundle_id="",
        bundle_digest=bytes(32),
        task=TASK,
        command=("sh",),
        reason="malformed",
        detail="x",
        use=0,
        exit_status=0,
        duration_ms=0,
    )
    raw = rfmt.sign_receipt(r, key)
    cp = rfmt.sign_checkpoint("build-01", 2**62, 2**62, rfmt.receipt_hash(raw), T0, key)
    write_media(
        tmp_path / "dos", {"receipts-build-01-x.kit": rfmt.encode_batch([raw], cp)}
    )
    start = clock.monotonic()
    report = reconcile(
        load_batches([tmp_path / "dos"]),
        world.signer.ledger.hosts(),
        world.signer.ledger.bundles(),
        now=T0,
    )
    assert clock.monotonic() - start < 5
    assert "chain-gap" in [a.code for a in report.anomalies]


def test_oversized_media_file_is_refused_before_reading(
    world: World, tmp_path: Path
) -> None:
    usb = tmp_path / "usb"
    write_media(usb, {"bundle-big.kit": b"x"})
    os.truncate(usb / "bundle-big.kit", 60 * 1024 * 1024)  # sparse; the digest is stale
    proc = world.kit("import", usb, "--home", world.host_home("build-01"))
    assert proc.returncode in (3, 4), proc.stderr
    assert b"cap" in proc.stderr
    assert list((world.host_home("build-01") / "inbox").iterdir()) == []


def test_undecodable_path_still_leaves_a_denial_receipt(
    world: World, tmp_path: Path
) -> None:
    odd = os.fsencode(tmp_path) + b"/x\xff.kit"
    proc = subprocess.run(
        [
            str(Path(os.sys.executable).with_name("kit")),
            "verify",
            odd,
            "--task",
            TASK,
            "--home",
            str(world.host_home("build-01")),
        ],
        capture_output=True,
        check=False,
        timeout=60,
        env={**os.environ, "KIT_PASSPHRASE_FILE": str(world.passfile)},
    )
    assert proc.returncode == 4, proc.stderr
    assert world.receipts()[-1].reason == "unreadable"


def test_unclean_reconciliation_does_not_feed_the_inventory(
    world: World, tmp_path: Path
) -> None:
    world.use_and_export(tmp_path / "back", tmp_path / "o")
    batch = next((tmp_path / "back").glob("receipts-*.kit"))
    from kit.formats import receipt as rfmt

    raws, cp = rfmt.split_batch(batch.read_bytes())
    write_media(tmp_path / "cut", {batch.name: rfmt.encode_batch(raws[:1], cp)})
    proc = world.kit("reconcile", tmp_path / "cut", "--home", world.signer_home)
    assert proc.returncode == 1
    assert world.signer.ledger.usage() == {}
