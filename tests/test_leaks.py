"""Nothing leaked (issue 9): after a whole flow through the real CLI and a set
of attacks, the secret is in no file of any home or media folder and in no
output, raw, hex or base64; private files are 0600 in 0700 folders, and a
command refuses a private file others can read, saying how to fix it."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import CHILD, KIT, TASK, World, child_argv, new_secret
from test_attacks import assert_not_leaked

from kit.media import write_media

# A second allowed command: the secret by file delivery, copied by the child.
FROM_FILE = ("sh", "-c", 'cat "$KIT_SECRET_FILE" > "$0"')


def _kit(
    w: World, *args: str | Path, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["KIT_PASSPHRASE_FILE"] = str(w.passfile)
    return subprocess.run(
        [str(KIT), *map(str, args)],
        env=env,
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def _delivery_folders() -> list[Path]:
    """kit's private folders on tmpfs for --deliver file (kit.host.runner)."""
    return sorted(Path("/dev/shm").glob("kit-*"))


def _files(*roots: Path) -> list[Path]:
    out = []
    for root in roots:
        for dirpath, _, names in os.walk(root):
            out += [Path(dirpath) / n for n in names]
    return out


def test_nothing_leaks_after_the_full_flow_and_attacks(
    world: World, tmp_path: Path
) -> None:
    signer, host = world.signer_home, world.host_home("build-01")
    secret = new_secret()
    outputs: list[subprocess.CompletedProcess[bytes]] = []

    def kit(*args: str | Path, stdin: bytes = b"", rc: int | None = 0) -> bytes:
        proc = _kit(world, *args, stdin=stdin)
        outputs.append(proc)
        if rc is not None:
            assert proc.returncode == rc, (args, proc.stderr)
        return proc.stdout

    # Issue (the secret on stdin), export, import, verify, run twice.
    issued = json.loads(
        kit(
            "issue",
            "--host",
            "build-01",
            "--env",
            "prod",
            "--task",
            TASK,
            "--command",
            shlex.join(CHILD),
            "--command",
            shlex.join(FROM_FILE),
            "--ttl",
            "1h",
            "--max-uses",
            "2",
            "--secret-stdin",
            "--home",
            signer,
            "--json",
            stdin=secret + b"\n",
        )
    )
    bundle_id = issued["bundle_id"]
    usb = tmp_path / "usb"
    kit("export", "--to", usb, "--home", signer)
    kit("import", usb, "--home", host)
    kit("verify", bundle_id, "--task", TASK, "--home", host)
    child = tmp_path / "child"  # the child's own output: the one place allowed
    child.mkdir()
    kit(
        "run",
        bundle_id,
        "--task",
        TASK,
        "--home",
        host,
        "--",
        *child_argv(child / "env"),
    )
    kit(
        "run",
        bundle_id,
        "--task",
        TASK,
        "--home",
        host,
        "--deliver",
        "file",
        "--",
        *FROM_FILE,
        child / "file",
    )
    for left in _files(*_delivery_folders()):  # other runs may have folders
        assert_not_leaked(secret, left.read_bytes())
    # The scan would find the secret where it is meant to be.
    for path in (child / "env", child / "file"):
        assert path.read_bytes().strip() == secret
        with pytest.raises(AssertionError):
            assert_not_leaked(secret, path.read_bytes())

    # Attacks: a replay, a wrong task, a forgery carrying the same secret,
    # tampered media.
    kit(
        "run",
        bundle_id,
        "--task",
        TASK,
        "--home",
        host,
        "--",
        *child_argv(tmp_path / "x"),
        rc=120,
    )
    kit(
        "run",
        bundle_id,
        "--task",
        "other",
        "--home",
        host,
        "--",
        *child_argv(tmp_path / "x"),
        rc=120,
    )
    forged = tmp_path / "forged.kit"
    forged.write_bytes(world.issue(by=world.attacker, secret=secret).data)
    kit("verify", forged, "--task", TASK, "--home", host, rc=1)
    kit(
        "run",
        forged,
        "--task",
        TASK,
        "--home",
        host,
        "--",
        *child_argv(tmp_path / "x"),
        rc=120,
    )
    bad = tmp_path / "usb-bad"
    genuine = world.issue(secret=secret).data
    write_media(bad, {"bundle-x.kit": genuine[:-1] + bytes([genuine[-1] ^ 1])})
    kit("import", bad, "--home", host, rc=1)  # as kit verify: unauthenticated
    assert not (tmp_path / "x").exists()

    # Receipts back, reconciled; status of both ends.
    back = tmp_path / "back"
    kit("receipts", "export", "--to", back, "--home", host)
    world.close()
    kit("reconcile", back, "--home", signer, rc=None)
    kit("host", "status", "--home", host, "--json", rc=None)
    kit("inventory", "--home", signer, rc=None)

    scanned = _files(world.root, usb, bad, back)
    assert len(scanned) > 20 and any(p.name == "state.db" for p in scanned)
    for path in scanned:
        try:
            assert_not_leaked(secret, path.read_bytes())
        except AssertionError:
            pytest.fail(f"the secret leaked into {path}")
    for proc in outputs:
        assert_not_leaked(secret, proc.stdout, proc.stderr)


# -- permissions ---------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_homes_made_by_the_cli_are_private(world: World, tmp_path: Path) -> None:
    signer, host = tmp_path / "signer", tmp_path / "host"
    proc = _kit(
        world,
        "signer",
        "init",
        "--home",
        signer,
        "--name",
        "acme",
        "--kdf",
        "interactive",
    )
    assert proc.returncode == 0, proc.stderr
    proc = _kit(
        world,
        "host",
        "init",
        "--name",
        "h1",
        "--env",
        "prod",
        "--trust",
        signer / "trust-root.kit",
        "--home",
        host,
    )
    assert proc.returncode == 0, proc.stderr
    for home, private in (
        (signer, ("signer.key", "ledger.db")),
        (host, ("hpke.key", "receipt.key", "state.db")),
    ):
        assert _mode(home) == 0o700
        for name in private:
            assert _mode(home / name) == 0o600, name
        for path in _files(home):
            assert not _mode(path) & 0o022, f"{path} is writable by others"
        for dirpath, dirs, _ in os.walk(home):
            for d in dirs:
                assert _mode(Path(dirpath) / d) == 0o700, d


@pytest.mark.parametrize("name", ["hpke.key", "receipt.key", "state.db"])
@pytest.mark.parametrize("command", ["verify", "run", "import", "host status"])
def test_host_refuses_private_files_others_can_read(
    world: World, tmp_path: Path, name: str, command: str
) -> None:
    host = world.host_home("build-01")
    i = world.issue()
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(i.data)
    usb = tmp_path / "usb"
    write_media(usb, {f"bundle-{i.claims.bundle_id}.kit": i.data})
    os.chmod(host / name, 0o644)
    out = tmp_path / "out"
    args: list[str | Path] = {
        "verify": ["verify", bundle, "--task", TASK, "--home", host],
        "run": ["run", bundle, "--task", TASK, "--home", host, "--", *child_argv(out)],
        "import": ["import", usb, "--home", host],
        "host status": ["host", "status", "--home", host],
    }[command]
    proc = _kit(world, *args)
    assert proc.returncode == (123 if command == "run" else 5), proc.stderr
    err = proc.stderr.decode()
    assert f"{host / name} has mode 644" in err
    assert f"chmod 600 {host / name}" in err  # says how to fix it
    assert not out.exists()
    os.chmod(host / name, 0o600)
    assert world.uses() == [] and world.receipts() == []


def test_signer_refuses_a_key_others_can_read(world: World, tmp_path: Path) -> None:
    key = world.signer_home / "signer.key"
    os.chmod(key, 0o640)
    proc = _kit(
        world,
        "issue",
        "--host",
        "build-01",
        "--env",
        "prod",
        "--task",
        TASK,
        "--command",
        "true",
        "--ttl",
        "1h",
        "--secret-stdin",
        "--home",
        world.signer_home,
        stdin=b"s3cret-value\n",
    )
    assert proc.returncode == 5, proc.stderr
    assert f"chmod 600 {key}" in proc.stderr.decode()
    assert world.signer_home.joinpath("signer.key").stat().st_mode & 0o777 == 0o640
