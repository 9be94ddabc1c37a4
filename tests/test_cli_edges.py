"""Loose ends at the edges of the command line: answers at a terminal prompt
(including end of input and Ctrl-C, through a real pseudo-terminal), names
that kit cannot record, files a command would overwrite, signer files others
can read, and the environment variables docs/CLI.md must list."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import select
import shlex
import shutil
import sqlite3
import subprocess
import termios
import time
from pathlib import Path

import pytest
from conftest import CHILD, KIT, TASK, World, child_argv

from kit.crypto.sign import fingerprint
from kit.formats.bundle import parse_bundle
from kit.formats.trustroot import load_trust_root
from kit.host.host import POLICY_FILE
from kit.media import read_media, write_media
from kit.signer.signer import KEY_FILE, LEDGER_FILE, ROOT_FILE, Signer

ROOT = Path(__file__).resolve().parent.parent
CTRL_C, CTRL_D = b"\x03", b"\x04"


def _kit_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env.update(TERM="dumb", COLUMNS="100", **extra)
    return env


def _make_controlling_tty() -> None:  # runs in the child, after setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _read_until(fd: int, seen: bytes, wanted: bytes, deadline: float) -> bytes:
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {wanted!r}; got {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every slave end is closed
            chunk = b""
        assert chunk, f"kit ended before {wanted!r}; got {seen!r}"
        seen += chunk
    return seen


def on_tty(
    args: list[str | Path],
    steps: list[tuple[bytes, bytes]],
    env: dict[str, str],
    timeout: float = 60,
) -> tuple[int, str]:
    """Run ``kit ARGS`` with a pseudo-terminal as its controlling terminal and
    its stdin, stdout and stderr; for each (prompt, keys) wait for the prompt,
    then type the keys. Returns the exit status and everything it wrote."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [str(KIT), *map(str, args)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        preexec_fn=_make_controlling_tty,
    )
    os.close(slave)
    deadline = time.monotonic() + timeout
    seen = b""
    try:
        for prompt, keys in steps:
            seen = _read_until(master, seen, prompt, deadline)
            time.sleep(0.2)  # let it reach the read (getpass flushes input)
            os.write(master, keys)
        while True:  # the rest, up to the end of kit's output
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            assert ready, f"kit did not finish; got {seen!r}"
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, seen.decode("utf-8", "replace").replace("\r\n", "\n")


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and "Aborted" not in text, text
    assert "internal error" not in text, text


# -- 1. the high-risk confirmation prompt --------------------------------------

PROMPT = b"Release the secret for this run? [y/N]: "


def _high_risk_bundle(world: World, tmp_path: Path) -> Path:
    (world.host_home("build-01") / POLICY_FILE).write_text(
        'environments = ["prod"]\nrisk_levels = ["low", "medium", "high"]\n'
    )
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue(risk="high", max_uses=2).data)
    return bundle


@pytest.mark.parametrize(
    ("keys", "said"),
    [
        (b"n\n", ""),
        (b"\n", ""),
        (CTRL_D, "kit: no answer (end of input): taken as no"),
        (CTRL_C, "kit: interrupted (Ctrl-C): taken as no"),
    ],
    ids=["n", "empty", "eof", "sigint"],
)
def test_high_risk_prompt_refusals(
    world: World, tmp_path: Path, keys: bytes, said: str
) -> None:
    bundle = _high_risk_bundle(world, tmp_path)
    out = tmp_path / "out"
    home = world.host_home("build-01")
    before = len(world.receipts())
    code, text = on_tty(
        ["run", bundle, "--task", TASK, "--home", home, "--", *child_argv(out)],
        [(PROMPT, keys)],
        _kit_env(),
    )
    assert code == 120, text  # denied, as kit run reports it (CLI.md)
    assert "is HIGH risk" in text
    # What this run would do, not only what the bundle allows.
    assert f"this run: sh -c {shlex.quote(CHILD[2])} {out} 0" in text
    assert "the secret goes to it as KIT_SECRET, by env" in text
    assert said in text
    assert (
        "kit: denied [not-confirmed]: the high-risk release was not confirmed" in text
    )
    _no_traceback(text)
    assert not out.exists()  # nothing released
    assert world.uses() == []  # no use spent
    receipts = world.receipts()
    assert len(receipts) == before + 1
    deny = receipts[-1]
    assert (deny.event, deny.action, deny.reason) == ("deny", "run", "not-confirmed")
    assert deny.bundle_id and deny.use == 0


def test_high_risk_prompt_yes_releases(world: World, tmp_path: Path) -> None:
    bundle = _high_risk_bundle(world, tmp_path)
    out = tmp_path / "out"
    home = world.host_home("build-01")
    code, text = on_tty(
        ["run", bundle, "--task", TASK, "--home", home, "--", *child_argv(out)],
        [(PROMPT, b"y\n")],
        _kit_env(),
    )
    assert code == 0, text
    assert "kit: released bundle" in text and "(use 1 of 2)" in text
    _no_traceback(text)
    assert out.read_bytes().startswith(b"tok-")
    assert len(world.uses()) == 1
    events = [(r.event, r.reason) for r in world.receipts()]
    assert events[-2:] == [("release", ""), ("exit", "")]


def test_verify_never_asks_even_on_a_terminal(world: World, tmp_path: Path) -> None:
    """kit verify releases nothing, so it has nothing to confirm: no prompt,
    and the answer a run would get (exit 0 here, 1 when denied)."""
    bundle = _high_risk_bundle(world, tmp_path)
    home = world.host_home("build-01")
    code, text = on_tty(
        ["verify", bundle, "--task", TASK, "--home", home], [], _kit_env()
    )
    assert code == 0, text
    assert "would be released" in text and "[y/N]" not in text
    code, text = on_tty(
        ["verify", bundle, "--task", "other-task", "--home", home], [], _kit_env()
    )
    assert code == 1 and "kit: denied [wrong-task]" in text, text
    assert world.uses() == []


# -- 2. end of input or Ctrl-C at a passphrase prompt --------------------------


@pytest.mark.parametrize(
    ("keys", "how"),
    [(CTRL_D, "end of input (Ctrl-D)"), (CTRL_C, "Ctrl-C")],
    ids=["eof", "sigint"],
)
def test_signer_init_passphrase_prompt_abandoned(
    tmp_path: Path, keys: bytes, how: str
) -> None:
    home = tmp_path / "S"
    code, text = on_tty(
        ["signer", "init", "--home", home, "--name", "acme", "--kdf", "interactive"],
        [(b"Passphrase: ", keys)],
        _kit_env(),
    )
    assert code == 2, text  # a usage error, as with no terminal at all
    assert f"kit: error: no passphrase given: {how} at the prompt" in text
    assert text.count("kit: error") == 1
    _no_traceback(text)
    assert not home.exists()  # no half-made home


def test_signer_init_second_prompt_abandoned(tmp_path: Path) -> None:
    home = tmp_path / "S"
    code, text = on_tty(
        ["signer", "init", "--home", home, "--name", "acme", "--kdf", "interactive"],
        [(b"Passphrase: ", b"a long passphrase\n"), (b"Repeat passphrase: ", CTRL_D)],
        _kit_env(),
    )
    assert code == 2 and "no passphrase given" in text, text
    _no_traceback(text)
    assert not home.exists()


@pytest.mark.parametrize("keys", [CTRL_D, CTRL_C], ids=["eof", "sigint"])
def test_issue_passphrase_prompt_abandoned(
    world: World, tmp_path: Path, keys: bytes
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"tok-never-issued")
    outbox = sorted(p.name for p in (world.signer_home / "outbox").iterdir())
    code, text = on_tty(
        [
            "issue",
            "--home",
            world.signer_home,
            "--host",
            "build-01",
            "--env",
            "prod",
            "--task",
            TASK,
            "--ttl",
            "1h",
            "--command",
            "true",
            "--secret-file",
            secret,
        ],
        [(b"Passphrase: ", keys)],
        _kit_env(),
    )
    assert code == 2, text
    assert "kit: error: no passphrase given" in text
    _no_traceback(text)
    assert sorted(p.name for p in (world.signer_home / "outbox").iterdir()) == outbox
    assert world.signer.ledger.bundles() == []


QR_ENCODE = ["qr", "encode", "--terminal"]


def test_ctrl_c_elsewhere_is_130_without_aborted(world: World) -> None:
    """Ctrl-C at any other wait (here between QR frames on the terminal) ends
    the command as the shell reports SIGINT, as the host's hot path does."""
    code, text = on_tty(
        [*QR_ENCODE, world.signer_home / ROOT_FILE, "--frame-bytes", "100"],
        [(b"Enter for the next frame ", CTRL_C)],
        _kit_env(),
    )
    assert code == 130, text
    assert text.rstrip().endswith("kit: interrupted (Ctrl-C)"), text
    _no_traceback(text)


# -- 3. names kit cannot record are usage errors -------------------------------


def test_bad_names_are_usage_errors(world: World, tmp_path: Path) -> None:
    trust = world.signer_home / ROOT_FILE
    bad = "Build 01"
    home = ["--home", world.signer_home]
    issue = ["--env", "prod", "--task", TASK, "--ttl", "1h", "--command", "true"]
    host_init = ["host", "init", "--home", tmp_path / "H", "--trust", trust]
    approver_init = ["approver", "init", "--home", tmp_path / "A", "--trust", trust]
    cases: list[tuple[list[str | Path], str]] = [
        (["signer", "init", "--home", tmp_path / "S", "--name", "Acme Ops"], "--name"),
        (
            [*host_init, "--name", bad, "--env", "prod"],
            "--name",
        ),
        (
            [*host_init, "--name", "b1", "--env", "PROD"],
            "--env",
        ),
        (
            [*approver_init, "--label", "Alice S", "--kdf", "interactive"],
            "--label",
        ),
        (
            ["issue", *home, "--host", bad, *issue, "--secret-file", world.passfile],
            "--host",
        ),
        (["revoke", *home, "--env", "pr od"], "--env"),
        (["retire", "host", bad, *home], "host"),
    ]
    for args, option in cases:
        proc = world.kit(*args)
        err = proc.stderr.decode()
        assert proc.returncode == 2, (args, err)
        assert re.search(
            rf"kit: error: {option} '[^']*' is not a valid name: use 1 to 63", err
        ), err
        assert "Traceback" not in err
    for made in ("S", "H", "A"):
        assert not (tmp_path / made).exists()
    assert world.signer.ledger.bundles() == []
    assert world.signer.ledger.revocations() == []


def test_bad_name_is_refused_before_the_passphrase_prompt(tmp_path: Path) -> None:
    code, text = on_tty(
        ["signer", "init", "--home", tmp_path / "S", "--name", "Acme"], [], _kit_env()
    )
    assert code == 2 and "--name 'Acme' is not a valid name" in text, text
    assert "Passphrase" not in text and not (tmp_path / "S").exists()


# -- 4. every variable kit reads is documented ---------------------------------


def test_every_kit_variable_read_is_documented() -> None:
    read: set[str] = set()
    for path in (ROOT / "kit").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        read.update(re.findall(r"envvar=\"(KIT_[A-Z_]+)\"", text))
        read.update(re.findall(r"environ(?:b)?\.get\(\s*b?\"(KIT_[A-Z_]+)\"", text))
        read.update(re.findall(r"getenv\(\s*\"(KIT_[A-Z_]+)\"", text))
    assert {"KIT_HOME", "KIT_PASSPHRASE_FILE", "KIT_BUNDLES"} <= read
    head = (ROOT / "docs" / "CLI.md").read_text(encoding="utf-8").split("## Command")[0]
    for variable in read:
        assert re.search(rf"^\| `{variable}` \| [^|]+ \| [^|]+ \|$", head, re.M), (
            variable
        )
        man = (ROOT / "share" / "man" / "man1" / "kit-issue.1").read_text()
        assert f"\n{variable}\n" in man, variable


# -- 5. trust commands never overwrite a file silently --------------------------


def _approver(world: World, tmp_path: Path, label: str = "alice") -> Path:
    home = tmp_path / label
    proc = world.kit(
        "approver",
        "init",
        "--home",
        home,
        "--label",
        label,
        "--kdf",
        "interactive",
        "--trust",
        world.signer_home / ROOT_FILE,
    )
    assert proc.returncode == 0, proc.stderr
    proc = world.kit(
        "trust",
        "add-key",
        home / "approver.pub",
        "--role",
        "approver",
        "--home",
        world.signer_home,
    )
    assert proc.returncode == 0, proc.stderr
    return home


def test_waiting_candidate_root_is_not_replaced(world: World, tmp_path: Path) -> None:
    _approver(world, tmp_path)  # trust root v2 names alice
    proc = world.kit("trust", "approvals", "--high", "1", "--home", world.signer_home)
    assert proc.returncode == 0, proc.stderr
    candidate = world.signer_home / "trust-roots" / "candidate-v000003.kit"
    first = candidate.read_bytes()
    # Any next version now, candidate or not, would strand that candidate.
    for args in (
        ["trust", "approvals", "--medium", "1"],
        ["trust", "renew", "--ttl", "100d"],
    ):
        proc = world.kit(*args, "--home", world.signer_home)
        err = proc.stderr.decode()
        assert proc.returncode == 4, err
        assert f"{candidate} already exists" in err and "--force" in err
        assert "nothing written" in err and "Traceback" not in err
        assert candidate.read_bytes() == first
        signer = Signer(world.signer_home)
        assert signer.root.version == 2
        signer.close()
    proc = world.kit(
        "trust", "approvals", "--medium", "1", "--force", "--home", world.signer_home
    )
    assert proc.returncode == 0, proc.stderr
    assert candidate.read_bytes() != first


def test_approve_out_refuses_an_existing_file(world: World, tmp_path: Path) -> None:
    alice = _approver(world, tmp_path)
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue(risk="medium").data)
    usb = tmp_path / "usb"
    proc = world.kit("export", "--home", world.signer_home, "--to", usb)
    assert proc.returncode == 0, proc.stderr
    taken = tmp_path / "approved.kit"
    taken.write_bytes(b"someone else's file")
    proc = world.kit("approve", bundle, "--home", alice, "--out", taken, "--yes")
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    assert f"{taken} already exists" in err and "--force" in err
    assert taken.read_bytes() == b"someone else's file"
    proc = world.kit(
        "approve", bundle, "--home", alice, "--trust", usb, "--out", bundle, "--yes"
    )
    assert proc.returncode == 0, proc.stderr  # in place, said explicitly
    other = tmp_path / "other.kit"
    other.write_bytes(world.issue(risk="medium").data)
    proc = world.kit(
        "approve", other, "--home", alice, "--out", taken, "--force", "--yes"
    )
    assert proc.returncode == 0, proc.stderr
    # the approved copy (one more signature) replaced the file; the input stays
    assert len(taken.read_bytes()) > len(other.read_bytes()) > 100


def test_out_files_are_not_replaced_without_force(world: World, tmp_path: Path) -> None:
    taken = tmp_path / "taken.kit"
    taken.write_bytes(b"keep me")
    secret = tmp_path / "secret"
    secret.write_bytes(b"tok-not-issued")
    home = ["--home", world.signer_home]
    issue = ["issue", *home, "--host", "build-01", "--env", "prod", "--task", TASK]
    issue += ["--ttl", "1h", "--command", "true", "--secret-file", secret]
    host_init = ["host", "init", "--home", tmp_path / "H", "--name", "build-09"]
    host_init += ["--env", "prod", "--trust", world.signer_home / ROOT_FILE]
    commands: list[list[str | Path]] = [
        issue,
        ["revoke", *home, "--host", "build-03"],
        ["retire", "env", "dev", *home],
        host_init,
    ]
    for args in commands:
        proc = world.kit(*args, "--out", taken)
        err = proc.stderr.decode()
        assert proc.returncode == 4, (args, err)
        assert f"{taken} already exists; nothing read or written" in err, err
        assert "--force" in err and "Traceback" not in err
        assert taken.read_bytes() == b"keep me"
    assert not (tmp_path / "H").exists()
    assert world.signer.ledger.bundles() == []
    assert world.signer.ledger.revocations() == []
    proc = world.kit(*issue, "--out", taken, "--force")
    assert proc.returncode == 0, proc.stderr
    assert taken.read_bytes() != b"keep me" and len(world.signer.ledger.bundles()) == 1


# -- 6. signer files others can read or write -----------------------------------


@pytest.mark.parametrize(
    ("name", "mode"),
    [(LEDGER_FILE, 0o644), (LEDGER_FILE, 0o660), (KEY_FILE, 0o604)],
)
def test_signer_refuses_private_files_others_can_use(
    world: World, tmp_path: Path, name: str, mode: int
) -> None:
    path = world.signer_home / name
    os.chmod(path, mode)
    secret = tmp_path / "secret"
    secret.write_bytes(b"tok-not-issued")
    proc = world.kit(
        "issue",
        "--home",
        world.signer_home,
        "--host",
        "build-01",
        "--env",
        "prod",
        "--task",
        TASK,
        "--ttl",
        "1h",
        "--command",
        "true",
        "--secret-file",
        secret,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 5, err
    assert f"{path} has mode {mode:o}; it must be 600 (chmod 600 {path})" in err
    assert "Traceback" not in err
    os.chmod(path, 0o600)
    assert world.signer.ledger.bundles() == []
    assert list((world.signer_home / "outbox").iterdir()) == []


@pytest.mark.parametrize("name", [".", ROOT_FILE])
def test_signer_refuses_a_home_or_root_others_can_write(
    world: World, name: str
) -> None:
    path = world.signer_home / name if name != "." else world.signer_home
    os.chmod(path, path.stat().st_mode | 0o022)  # noqa: S103 - on purpose
    proc = world.kit("trust", "show", "--home", world.signer_home)
    err = proc.stderr.decode()
    assert proc.returncode == 5, err
    assert f"chmod go-w {path}" in err
    os.chmod(path, path.stat().st_mode & ~0o022)


# -- 7. the pause between QR frames on a terminal -------------------------------


def test_qr_terminal_frames_stop_cleanly_at_end_of_input(
    world: World, tmp_path: Path
) -> None:
    """Ctrl-D at "Enter for the next frame" says which frames were not shown
    (a usage error, exit 2), with no traceback; Enter shows the next one."""
    src = tmp_path / "b.kit"
    src.write_bytes(world.issue().data)
    args: list[str | Path] = ["qr", "encode", src, "--terminal", "--frame-bytes", "200"]
    prompt = b"Enter for the next frame "
    code, text = on_tty(args, [(prompt, b"\x04")], _kit_env())
    assert code == 2, text
    n = int(text.split("frame 1 of ", 1)[1].split()[0])
    assert n >= 3 and "frame 2 of" not in text
    assert f"kit: error: stopped after frame 1 of {n}: end of input" in text
    assert f"frames 2..{n} were not shown" in text
    _no_traceback(text)
    keys = [(prompt, b"\n")] + [
        (f"frame {i} of {n}".encode(), b"\n") for i in range(2, n)
    ]
    code, text = on_tty(args, keys, _kit_env())
    assert code == 0, text
    assert f"frame {n} of {n}" in text
    _no_traceback(text)


# -- 8. review fixes: hostile text on the terminal, --out, full stdout ----------


def test_control_characters_never_reach_the_terminal(
    world: World, tmp_path: Path
) -> None:
    """A refusal names the file it could not read and the prompt shows the
    claimed command: an escape sequence in either is shown as \\xNN, so it
    can neither retitle the terminal nor hide a word of the command."""
    odd = tmp_path / "b\x1b]0;pwned\x07.kit"
    home = world.host_home("build-01")
    proc = world.kit("verify", odd, "--task", TASK, "--home", home)
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    assert "b\\x1b]0;pwned\\x07.kit: no such file" in err
    assert b"\x1b" not in proc.stderr and b"\x07" not in proc.stderr
    (home / POLICY_FILE).write_text(
        'environments = ["prod"]\nrisk_levels = ["low", "medium", "high"]\n'
    )
    hidden = ("sh", "-c", "echo \x1b[8mcurl evil\x1b[0m")
    bundle = tmp_path / "h.kit"
    bundle.write_bytes(world.issue(risk="high", commands=(hidden,)).data)
    code, text = on_tty(
        ["run", bundle, "--task", TASK, "--home", home, "--", *hidden],
        [(PROMPT, b"n\n")],
        _kit_env(),
    )
    assert code == 120, text
    assert "echo \\x1b[8mcurl evil\\x1b[0m" in text
    assert "\x1b" not in text
    assert world.uses() == []


def test_issue_out_into_a_missing_folder_is_refused_before_issuing(
    world: World, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"tok-not-issued")
    args: list[str | Path] = ["issue", "--home", world.signer_home]
    args += ["--host", "build-01", "--env", "prod", "--task", TASK, "--ttl", "1h"]
    args += ["--command", "true", "--secret-file", secret]
    for out, why in (
        (tmp_path / "nodir" / "x.kit", "does not exist; nothing written"),
        (tmp_path, "is a folder; nothing written"),
    ):
        proc = world.kit(*args, "--out", out, "--force")
        err = proc.stderr.decode()
        assert proc.returncode == 4, err
        assert why in err, err
    proc = world.kit("revoke", "--home", world.signer_home, "--host", "build-03",
                     "--out", tmp_path / "nodir" / "r.kit")  # fmt: skip
    assert proc.returncode == 4 and b"does not exist" in proc.stderr
    assert world.signer.ledger.bundles() == []  # nothing issued
    assert world.signer.ledger.revocations() == []  # nothing revoked
    assert not any((world.signer_home / "outbox").glob("*.kit"))
    proc = world.kit("host", "init", "--home", tmp_path / "H", "--name", "build-09",
                     "--env", "prod", "--trust", world.signer_home / ROOT_FILE,
                     "--out", tmp_path / "nodir" / "e.kit")  # fmt: skip
    assert proc.returncode == 4 and b"does not exist" in proc.stderr
    assert not (tmp_path / "H").exists()  # no half-made host home


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_stdout_is_a_media_error_not_an_internal_one(
    world: World, tmp_path: Path
) -> None:
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue(max_uses=2).data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    home = world.host_home("build-01")
    for args in (
        ["verify", bundle, "--task", TASK, "--home", home, "--json"],
        ["trust", "show", "--home", world.signer_home, "--json"],
    ):
        with open("/dev/full", "wb") as full:
            proc = subprocess.run(
                [str(KIT), *map(str, args)],
                stdout=full,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=env,
                timeout=60,
                check=False,
            )
        err = proc.stderr.decode()
        assert proc.returncode == 4, (args, err)
        assert "kit: error: input/output failed" in err and "space" in err, err
        assert "internal error" not in err and "Traceback" not in err, err


def test_refusal_with_json_to_a_closed_pipe_keeps_its_code_and_message(
    world: World, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    home = world.host_home("build-01")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before kit writes a byte
    try:
        proc = subprocess.run(
            [str(KIT), "verify", str(tmp_path / "none.kit"), "--task", TASK,
             "--home", str(home), "--json"],
            stdout=write, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=env, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write)
    err = proc.stderr.decode()
    assert proc.returncode == 4, err  # the refusal's own code, not 141
    assert "none.kit: no such file" in err and "Traceback" not in err, err


def test_remove_key_needs_a_real_prefix(world: World) -> None:
    root_before = (world.signer_home / ROOT_FILE).read_bytes()
    for prefix in ("", "a", "zzzzzz"):
        proc = world.kit("trust", "remove-key", prefix, "--home", world.signer_home)
        err = proc.stderr.decode()
        assert proc.returncode == 2, (prefix, err)
        assert "at least 4 characters" in err or "matches 0 keys" in err, err
        assert "Traceback" not in err
    assert (world.signer_home / ROOT_FILE).read_bytes() == root_before


def test_policy_reports_escape_control_characters(tmp_path: Path) -> None:
    """A declaration's free text (purpose, owner) reaches stdout through
    `kit policy show` and `kit policy check`: escaped, never raw."""
    folder = tmp_path / "bundles"
    folder.mkdir()
    src = ROOT / "bundles" / "nightly-migration-prod.toml"
    text = src.read_text(encoding="utf-8")
    purpose = re.search(r'^purpose = "(.*)"$', text, re.MULTILINE)
    assert purpose is not None
    text = text.replace(
        purpose.group(0), 'purpose = "Backfill \\u001b]0;pwned\\u0007 now."'
    )
    (folder / src.name).write_text(text, encoding="utf-8")
    env = _kit_env()
    done = subprocess.run(
        [str(KIT), "policy", "show", "nightly-migration-prod", "--dir", str(folder)],
        capture_output=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert b"Backfill \\x1b]0;pwned\\x07 now." in done.stdout
    assert b"\x1b" not in done.stdout + done.stderr and b"\x07" not in done.stdout


# -- 9. kit approve shows what it would sign, then asks --------------------------

APPROVE_PROMPT = b"? [y/N]: "
HIDDEN = ("sh", "-c", "echo \x1b[8mcurl evil\x1b[0m")


def _to_approve(world: World, tmp_path: Path) -> tuple[Path, Path, Path, str]:
    """Alice's approver home, a stick written by kit export carrying trust
    root v2 (which names her) and a medium-risk bundle, and that bundle."""
    alice = _approver(world, tmp_path)
    usb = tmp_path / "usb"
    proc = world.kit("export", "--home", world.signer_home, "--to", usb)
    assert proc.returncode == 0, proc.stderr
    issued = world.issue(risk="medium", commands=(HIDDEN,))
    name = f"bundle-{issued.claims.bundle_id}.kit"
    write_media(usb, {name: issued.data})
    return alice, usb, usb / name, issued.claims.bundle_id


def _stick(usb: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(usb.iterdir())}


def _approve_env(world: World) -> dict[str, str]:
    return _kit_env(KIT_PASSPHRASE_FILE=str(world.passfile))


@pytest.mark.parametrize(
    ("keys", "said"),
    [
        (b"n\n", ""),
        (b"\n", ""),
        (CTRL_D, "kit: no answer (end of input): taken as no"),
        (CTRL_C, "kit: interrupted (Ctrl-C): taken as no"),
    ],
    ids=["n", "empty", "eof", "sigint"],
)
def test_approve_shows_the_claims_then_asks(
    world: World, tmp_path: Path, keys: bytes, said: str
) -> None:
    alice, usb, bundle, bundle_id = _to_approve(world, tmp_path)
    before = _stick(usb)
    pinned = (alice / ROOT_FILE).read_bytes()
    code, text = on_tty(
        ["approve", bundle, "--home", alice, "--trust", usb],
        [(APPROVE_PROMPT, keys)],
        _approve_env(world),
    )
    assert (alice / ROOT_FILE).read_bytes() == pinned  # v2 followed, not pinned
    assert code == 1, text  # denied, as a declined kit run confirmation
    claims = text.index(f"kit approve: bundle {bundle_id}: medium risk")
    question = text.index(f"Sign bundle {bundle_id} with approver key ")
    assert claims < question  # shown before it asks, and before any signature
    assert "commands: sh -c echo \\x1b[8mcurl evil\\x1b[0m" in text
    assert "\x1b" not in text  # the hidden words are shown, escaped
    assert "host build-01, env prod" in text and "0 approval(s) needed" in text
    assert said in text
    assert (
        f"kit: denied [not-confirmed]: bundle {bundle_id} was not approved; "
        "nothing written" in text
    )
    _no_traceback(text)
    assert _stick(usb) == before  # no signature added, manifest untouched


def test_approve_yes_at_the_prompt_signs_what_was_shown(
    world: World, tmp_path: Path
) -> None:
    alice, usb, bundle, bundle_id = _to_approve(world, tmp_path)
    body = parse_bundle(bundle.read_bytes()).envelope.body
    code, text = on_tty(
        ["approve", bundle, "--home", alice, "--trust", usb],
        [(APPROVE_PROMPT, b"y\n")],
        _approve_env(world),
    )
    assert code == 0, text
    assert text.index("Sign bundle") < text.index(f"approved bundle {bundle_id}")
    assert f"written to {bundle}" in text
    _no_traceback(text)
    env = parse_bundle(bundle.read_bytes()).envelope
    assert env.body == body and len(env.signatures) == 2
    assert bundle.name in read_media(usb)  # the stick's manifest still holds


def test_approve_without_a_terminal_needs_yes(world: World, tmp_path: Path) -> None:
    """Standard input not a terminal and no --yes: a usage error before the
    home is opened or caught up, the passphrase read or anything signed."""
    alice, usb, bundle, _ = _to_approve(world, tmp_path)
    before, root = _stick(usb), (alice / ROOT_FILE).read_bytes()
    proc = world.kit("approve", bundle, "--home", alice, "--trust", usb)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "standard input is not a terminal: pass --yes" in err
    assert "Traceback" not in err
    assert _stick(usb) == before and (alice / ROOT_FILE).read_bytes() == root
    proc = world.kit("approve", bundle, "--home", alice, "--trust", usb, "--yes")
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert err.index("commands: sh -c") < err.index("approved bundle")  # still shown
    assert len(parse_bundle(bundle.read_bytes()).envelope.signatures) == 2
    assert load_trust_root((alice / ROOT_FILE).read_bytes()).version == 2  # pinned


def test_approve_shows_a_candidate_roots_keys_and_changes_then_asks(
    world: World, tmp_path: Path
) -> None:
    alice = _approver(world, tmp_path)  # trust root v2 names alice
    proc = world.kit("trust", "approvals", "--high", "1", "--home", world.signer_home)
    assert proc.returncode == 0, proc.stderr
    told = proc.stderr.decode()  # how to get it co-signed, catch-up included
    assert "kit approve FOLDER/candidate-v000003.kit --trust EXPORT" in told
    assert "kit trust install " in told
    usb = tmp_path / "usb"
    proc = world.kit("export", "--home", world.signer_home, "--to", usb)
    assert proc.returncode == 0, proc.stderr
    candidate = tmp_path / "carry" / "candidate-v000003.kit"
    candidate.parent.mkdir()
    shutil.copy(world.signer_home / "trust-roots" / candidate.name, candidate)
    first = candidate.read_bytes()
    args: list[str | Path] = ["approve", candidate, "--home", alice, "--trust", usb]
    code, text = on_tty(args, [(APPROVE_PROMPT, b"n\n")], _approve_env(world))
    assert code == 1, text
    question = text.index("Sign trust root v3 with approver key ")
    for shown in (
        "kit approve: trust root v3 (next after the pinned v2):",
        "trust root acme v3, expires",
        "approvals needed: low 0, medium 0, high 1",
        "changes: approvals for high 0 -> 1",
    ):
        assert text.index(shown) < question, shown
    assert "kit: denied [not-confirmed]: trust root v3 was not approved" in text
    _no_traceback(text)
    assert candidate.read_bytes() == first
    code, text = on_tty(args, [(APPROVE_PROMPT, b"yes\n")], _approve_env(world))
    assert code == 0 and "co-signed trust root v3" in text, text
    proc = world.kit("trust", "install", candidate, "--home", world.signer_home)
    assert proc.returncode == 0, proc.stderr


# -- 10. approver and auditor homes others can read or write ---------------------


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_approver_refuses_a_key_others_can_read(
    world: World, tmp_path: Path, mode: int
) -> None:
    alice, usb, bundle, _ = _to_approve(world, tmp_path)
    key = alice / "approver.key"
    os.chmod(key, mode)
    before, root = _stick(usb), (alice / ROOT_FILE).read_bytes()
    proc = world.kit("approve", bundle, "--home", alice, "--trust", usb, "--yes")
    err = proc.stderr.decode()
    assert proc.returncode == 5, err
    assert f"{key} has mode {mode:o}; it must be 600 (chmod 600 {key})" in err
    assert "Traceback" not in err
    assert _stick(usb) == before and (alice / ROOT_FILE).read_bytes() == root
    os.chmod(key, 0o600)
    proc = world.kit("approve", bundle, "--home", alice, "--trust", usb, "--yes")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", [".", ROOT_FILE])
def test_approver_refuses_a_home_or_root_others_can_write(
    world: World, tmp_path: Path, name: str
) -> None:
    alice, usb, bundle, _ = _to_approve(world, tmp_path)
    path = alice / name if name != "." else alice
    os.chmod(path, path.stat().st_mode | 0o022)  # noqa: S103 - on purpose
    before, root = _stick(usb), (alice / ROOT_FILE).read_bytes()
    proc = world.kit("approve", bundle, "--home", alice, "--trust", usb, "--yes")
    err = proc.stderr.decode()
    assert proc.returncode == 5, err
    assert f"{path} has mode " in err and f"(chmod go-w {path})" in err
    assert "Traceback" not in err
    assert _stick(usb) == before and (alice / ROOT_FILE).read_bytes() == root
    os.chmod(path, path.stat().st_mode & ~0o022)


@pytest.mark.parametrize("name", [".", ROOT_FILE, "audit.db", "audit.db-wal"])
def test_auditor_refuses_a_home_root_or_store_others_can_write(
    world: World, tmp_path: Path, name: str
) -> None:
    audit = tmp_path / "audit"
    proc = world.kit("audit", "init", "--trust", world.signer_home / ROOT_FILE,
                     "--home", audit)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    world.issue()
    world.close()
    world._signer = None  # the CLI opens the signer home itself
    ledger = tmp_path / "ledger"
    proc = world.kit("ledger", "export", "--to", ledger, "--home", world.signer_home)
    assert proc.returncode == 0, proc.stderr
    path = audit / name if name != "." else audit
    if name == "audit.db-wal":  # recent commits, when a run left them
        path.touch(mode=0o600)
    os.chmod(path, path.stat().st_mode | 0o022)  # noqa: S103 - on purpose
    store = (audit / "audit.db").read_bytes()
    proc = world.kit("reconcile", "--home", audit, ledger)
    err = proc.stderr.decode()
    assert proc.returncode == 5, err
    assert f"{path} has mode " in err and f"(chmod go-w {path})" in err
    assert "Traceback" not in err
    assert (audit / "audit.db").read_bytes() == store  # nothing ingested
    os.chmod(path, path.stat().st_mode & ~0o022)
    proc = world.kit("reconcile", "--home", audit, ledger)
    assert proc.returncode == 0, proc.stderr


# -- 11. a secret over the size cap ----------------------------------------------


def test_secret_over_the_cap_is_a_usage_error_from_a_file_or_stdin(
    world: World, tmp_path: Path
) -> None:
    """Named by size and cap, exit 2 either way, before the passphrase is
    read or anything issued; one final newline is not counted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["KIT_PASSPHRASE_FILE"] = str(world.passfile)
    args: list[str | Path] = ["issue", "--home", world.signer_home]
    args += ["--host", "build-01", "--env", "prod", "--task", TASK, "--ttl", "1h"]
    args += ["--command", "true"]

    def issue(*more: str | Path, stdin: bytes = b"") -> tuple[int, str]:
        done = subprocess.run(
            [str(KIT), *map(str, [*args, *more])],
            input=stdin, capture_output=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        return done.returncode, done.stderr.decode()

    cap = "over the 8192-byte cap for a secret"
    big = tmp_path / "big"
    big.write_bytes(b"x" * 9000)
    code, err = issue("--secret-file", big)
    assert code == 2 and f"secret file {big}: 9000 bytes, {cap}" in err, err
    code, err = issue("--secret-stdin", stdin=b"x" * 9000)
    assert code == 2 and f"secret on standard input: 9000 bytes, {cap}" in err, err
    for raw, size in (
        (b"x" * 8193 + b"\n", "8193"),  # over by one, the newline not counted
        (b"x" * 8192 + b"\r\nmore", "8198"),  # was cut to its first 8192 bytes
        (b"x" * (3 << 20), "more than 1056771"),  # counted so far, then no further
    ):
        code, err = issue("--secret-stdin", stdin=raw)
        assert code == 2 and f"standard input: {size} bytes, {cap}" in err, err
        path = tmp_path / "s"
        path.write_bytes(raw)
        code, err = issue("--secret-file", path)
        assert code == 2 and f"secret file {path}: " in err and cap in err, err
        assert "Traceback" not in err
    assert world.signer.ledger.bundles() == []
    assert list((world.signer_home / "outbox").iterdir()) == []
    code, err = issue("--secret-stdin", stdin=b"x" * 8192 + b"\n")  # at the cap
    assert code == 0, err
    assert len(world.signer.ledger.bundles()) == 1


def test_a_database_failure_no_method_claims_is_a_home_error(
    world: World, tmp_path: Path
) -> None:
    """A damaged page of the ledger read by a command with no error mapping
    of its own (kit inventory) is a home error (5) naming SQLite's reason,
    not an internal error with its type only."""
    world.issue()
    world.damage_ledger_table("bundles")
    proc = world.kit("inventory", "--home", world.signer_home,
                     "--bundles", ROOT / "bundles")  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 5, err
    assert "kit: error: a database of the kit home failed: " in err
    assert "malformed" in err, err
    assert "internal error" not in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (sqlite3.OperationalError("database is locked"), 5),
        (sqlite3.DatabaseError("database disk image is malformed"), 5),
        (sqlite3.ProgrammingError("Cannot operate on a closed database."), 70),
        (sqlite3.InterfaceError("Error binding parameter 1"), 70),
        (sqlite3.IntegrityError("UNIQUE constraint failed: hosts.name"), 70),
    ],
)
def test_only_the_database_failing_is_a_home_error(
    exc: Exception, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """kit misusing SQLite is its own bug (internal, 70), not the home's
    database failing (5)."""
    from kit.cli.plain import internal

    assert internal(exc) == code
    err = capsys.readouterr().err
    if code == 5:
        assert f"a database of the kit home failed: {exc}" in err
    else:
        assert "internal error" in err and str(exc) not in err


def test_candidate_changes_name_a_relabelled_key(world: World) -> None:
    """A key kept under another label is a change the approver is shown."""
    from kit.cli.trust_cmds import _changes

    old = world.signer.root
    first = old.keys[0]
    new = old._replace(
        version=old.version + 1,
        keys=(first._replace(label="mallory"), *old.keys[1:]),
    )
    assert _changes(old, new) == [f"{first.key_id[:12]} label {first.label} -> mallory"]
    assert _changes(old, old._replace(version=old.version + 1)) == [
        "nothing but the version"
    ]


def test_an_output_folder_whose_parent_is_missing_is_refused(
    world: World, tmp_path: Path
) -> None:
    """A stick that is not mounted is not silently replaced by a new folder
    on the local disk: the last folder may be made, its parents not."""
    unmounted = tmp_path / "media" / "usb"
    proc = world.kit("export", "--home", world.signer_home, "--to", unmounted)
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    assert f"its parent folder {unmounted.parent} does not exist" in err
    assert "is the media mounted?" in err and "Traceback" not in err
    assert not (tmp_path / "media").exists()
    (tmp_path / "media").mkdir()
    proc = world.kit("export", "--home", world.signer_home, "--to", unmounted)
    assert proc.returncode == 0, proc.stderr
    assert (unmounted / "SHA256SUMS").is_file()


def test_host_init_and_enroll_print_the_same_request_fingerprint(
    world: World, tmp_path: Path
) -> None:
    """The operator can check out of band that the request enrolled is the
    one the host made."""
    request = tmp_path / "enroll.kit"
    proc = world.kit("host", "init", "--home", tmp_path / "H", "--name", "build-77",
                     "--env", "prod", "--trust", world.signer_home / ROOT_FILE,
                     "--out", request)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    made = proc.stderr.decode()
    want = fingerprint(hashlib.sha256(request.read_bytes()).digest())
    assert f"fingerprint:\n  {want}\nRead it to the operator" in made
    world.close()
    world._signer = None
    proc = world.kit("enroll", request, "--home", world.signer_home)
    assert proc.returncode == 0, proc.stderr
    said = proc.stderr.decode()
    assert f"request fingerprint:\n  {want}\n" in said
    assert "if they differ: kit retire host build-77" in said


def test_a_bundle_id_not_staged_says_to_import_first(
    world: World, tmp_path: Path
) -> None:
    home = world.host_home("build-01")
    proc = world.kit("run", "ab" * 16, "--task", TASK, "--home", home, "--", "true")
    err = proc.stderr.decode()
    assert proc.returncode == 122, err  # unreadable, as kit run reports it
    assert f"bundle {'ab' * 16} is not staged on this host: kit import" in err
    deny = world.receipts()[-1]
    assert (deny.event, deny.reason) == ("deny", "unreadable")


def test_host_init_refuses_a_link_as_out_before_making_the_home(
    world: World, tmp_path: Path
) -> None:
    """Even with --force: nothing half made, and the same init runs again."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    home = tmp_path / "H"
    args = ["host", "init", "--home", home, "--name", "build-78", "--env", "prod",
            "--trust", world.signer_home / ROOT_FILE]  # fmt: skip
    proc = world.kit(*args, "--out", link, "--force")
    assert proc.returncode == 4, proc.stderr
    assert b"it is a symbolic link, not a regular file" in proc.stderr
    assert not home.exists() and link.is_symlink()
    proc = world.kit(*args, "--out", tmp_path / "enroll.kit")
    assert proc.returncode == 0, proc.stderr
