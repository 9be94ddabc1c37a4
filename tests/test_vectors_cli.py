"""Every committed vector in tests/vectors, through the real ``kit`` script.

tests/test_vectors.py runs the vectors through the library; this runs the same
files through the CLI a host, an operator and an auditor use, under
``faketime`` at the vector clock (the vector trust root has a fixed expiry, so
the real clock cannot be used). The homes hold the vector keys:

- a host home made by ``init_host`` with the vector trust root, then given the
  vector host's HPKE key and receipt seed, the manifest's leeway, risk levels
  and clock floor, and a policy serving its env with the format's own caps (as
  the library test does), so only the bundle decides;
- a signer home whose trust root and sealed key are the vector ones
  (``sealed-key.bin`` holds the issuer seed under the manifest passphrase) and
  whose ledger holds ``enrollment-valid.kit`` and ``bundle-valid.kit``.

Every ``kit verify`` and ``kit run`` asks for the manifest's request: its
task and argv, each of its datasets as ``--dataset`` and its delivery mode
(``--deliver`` for verify; ``kit run`` delivers by env unless told otherwise).

Each test works on its own copy of the module's template homes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kit.crypto.seal import SealingKey
from kit.crypto.sign import key_id
from kit.formats.bundle import CAP as BUNDLE_CAP
from kit.formats.bundle import (
    MAX_LIFETIME,
    MAX_USES,
    decode_claims,
    parse_bundle,
)
from kit.formats.enrollment import load_enrollment
from kit.formats.envelope import verify_envelope
from kit.formats.receipt import GENESIS, Receipt, parse_receipt
from kit.formats.trustroot import load_trust_root
from kit.fsutil import atomic_write
from kit.host.host import (
    ENROLLMENT_FILE,
    HPKE_KEY,
    INBOX,
    RECEIPT_KEY,
    STATE_FILE,
    Host,
    init_host,
)
from kit.host.host import ROOT_FILE as HOST_ROOT_FILE
from kit.host.policy import FILE as POLICY_FILE
from kit.host.policy import HostPolicy
from kit.media import write_media
from kit.signer.signer import KEY_FILE, Signer, init_signer
from kit.signer.signer import ROOT_FILE as SIGNER_ROOT_FILE
from kit.storage.base import IssuanceRecord
from kit.storage.sqlite import SqliteHostState

VECTORS = Path(__file__).parent / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
ENTRIES = {e["file"]: e for e in MANIFEST["vectors"]}
KIT = Path(sys.executable).parent / "kit"
FAKETIME = shutil.which("faketime")

NOW = MANIFEST["now"]
HOST = MANIFEST["host"]
TASK = MANIFEST["task"]
COMMAND = tuple(MANIFEST["command"])
DATASETS = tuple(MANIFEST["datasets"])
DELIVERY = MANIFEST["delivery"]
DATASET_ARGS = [a for d in DATASETS for a in ("--dataset", d)]
PASSPHRASE = MANIFEST["passphrase"].encode()
SECRET = ENTRIES["bundle-valid.kit"]["secret"]
[SEED_FILE] = [e["file"] for e in MANIFEST["vectors"] if e["kind"] == "ed25519-seed"]

# The child of `kit run`: the manifest's argv is `python3 export.py --full`, so
# export.py (in the child's working directory) writes the variable the bundle
# names to OUT there. The child starts only after a release, so every refusal
# must leave OUT absent.
OUT = "secret.out"
EXPORT_PY = (
    "import os, pathlib\n"
    f"pathlib.Path({OUT!r}).write_text(os.environ.get('KIT_SECRET', '<unset>'))\n"
)

# Exit codes (kit/cli/common.py, docs/CLI.md): verify and init, then kit run.
EXIT = {"ok": 0, "denied": 1, "malformed": 3}
RUN_EXIT = {"ok": 0, "denied": 120, "malformed": 121}


def read(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def of_kind(kind: str) -> list[Any]:
    return [
        pytest.param(e, id=e["file"]) for e in MANIFEST["vectors"] if e["kind"] == kind
    ]


def reason_for(expect: str) -> str:
    """The reason code a host's denial receipt carries for a vector outcome."""
    return {"FormatError": "malformed", "UnauthenticatedError": "unauthenticated"}.get(
        expect, expect
    )


def exit_class(expect: str) -> str:
    if expect == "ok":
        return "ok"
    return "malformed" if expect == "FormatError" else "denied"


def kit(
    *args: str | Path, now: int = NOW, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``kit`` script with the clock set to ``now`` (UTC)."""
    assert FAKETIME is not None, "libfaketime's faketime is required"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["TZ"] = "UTC"
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return subprocess.run(
        [FAKETIME, stamp, str(KIT), *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr, r.stderr
    assert "internal error" not in r.stderr, r.stderr


# -- the vector host --------------------------------------------------------------


@pytest.fixture(scope="module")
def host_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("vector-host") / "host"
    init_host(home, HOST["name"], HOST["env"], read(MANIFEST["trust_root"]), NOW)
    atomic_write(home / HPKE_KEY, read(HOST["hpke_key"]), 0o600)
    atomic_write(home / RECEIPT_KEY, read(SEED_FILE), 0o600)
    atomic_write(home / ENROLLMENT_FILE, read("enrollment-valid.kit"))
    policy = HostPolicy(
        environments=(HOST["env"],),
        max_lifetime=MAX_LIFETIME,
        max_uses=MAX_USES,
        leeway=MANIFEST["leeway"],
        risk_levels=tuple(MANIFEST["risk_levels"]),
    )
    atomic_write(home / POLICY_FILE, policy.to_toml().encode())
    state = SqliteHostState(home / STATE_FILE)
    state.put("clock_floor", str(MANIFEST["floor"]).encode())
    state.close()
    # The home now is the vector host: same identity, keys, root and floor.
    host = Host(home)
    try:
        assert host.identity.name == HOST["name"]
        assert host.identity.env == HOST["env"]
        assert host.identity.hpke_key_id == ENTRIES[HOST["hpke_key"]]["key_id"]
        assert host.receipt_key_id == ENTRIES[SEED_FILE]["key_id"]
        assert host.root.digest == hashlib.sha256(read(MANIFEST["trust_root"])).digest()
        assert host.policy == policy
        assert host.state.floor() == MANIFEST["floor"]
        assert host.state.head()[0] == 0
    finally:
        host.close()
    return home


@pytest.fixture
def host_home(host_template: Path, tmp_path: Path) -> Path:
    home = tmp_path / "host"
    shutil.copytree(host_template, home, symlinks=True)
    return home


def journal(home: Path) -> list[Receipt]:
    """The host's receipts, each checked against the vector receipt key and
    the hash chain."""
    pub = bytes.fromhex(ENTRIES[SEED_FILE]["public"])
    state = SqliteHostState(home / STATE_FILE)
    try:
        rows = state.receipts_after(0)
    finally:
        state.close()
    out: list[Receipt] = []
    prev = GENESIS
    for seq, raw in rows:
        sr = parse_receipt(raw)
        verify_envelope(sr.envelope, {key_id(pub): pub}, threshold=1, what="receipt")
        assert sr.receipt.seq == seq == len(out) + 1
        assert sr.receipt.prev == prev
        prev = hashlib.sha256(raw).digest()
        out.append(sr.receipt)
    return out


def uses(home: Path, bundle_id: str) -> int:
    state = SqliteHostState(home / STATE_FILE)
    try:
        return len(state.uses(bundle_id))
    finally:
        state.close()


def bundle_id_of(entry: dict[str, Any]) -> str:
    return decode_claims(parse_bundle(read(entry["file"])).claims_bytes).bundle_id


def check_refusal_stderr(stderr: str, entry: dict[str, Any]) -> None:
    expect = entry["expect"]
    if expect == "FormatError":
        assert "kit: error: " in stderr, stderr
        # Refused after authentication: the message names the claim at fault.
        assert entry.get("detail", "") in stderr, stderr
    elif expect == "UnauthenticatedError":
        # Uniform: the message never says which check failed.
        assert "kit: denied: bundle is not validly signed by a trusted key" in stderr
    else:
        assert f"kit: denied [{expect}]: " in stderr, stderr


def check_denial_receipt(
    home: Path, entry: dict[str, Any], action: str, command: tuple[str, ...]
) -> Receipt:
    *_, last = journal(home)
    expect = entry["expect"]
    assert (last.event, last.action, last.reason) == (
        "deny",
        action,
        reason_for(expect),
    )
    # FORMAT.md 7: the digest of the bytes as read; a file over the bundle cap
    # is refused before it is read, so that is the digest of nothing.
    data = read(entry["file"])
    as_read = data if len(data) <= BUNDLE_CAP else b""
    assert last.bundle_digest == hashlib.sha256(as_read).digest()
    assert (last.task, last.command, last.use) == (TASK, command, 0)
    # What was asked is recorded as asked; a refusal hands nothing over.
    assert (last.datasets, last.delivery) == (DATASETS, "")
    # The bundle id is recorded only once the bundle authenticated and decoded.
    authenticated = expect not in ("FormatError", "UnauthenticatedError")
    assert last.bundle_id == (bundle_id_of(entry) if authenticated else "")
    return last


@pytest.mark.parametrize("entry", of_kind("bundle"))
def test_bundle_verify(entry: dict[str, Any], host_home: Path) -> None:
    path = VECTORS / entry["file"]
    r = kit(
        "verify",
        path,
        "--task",
        TASK,
        "--command",
        shlex.join(COMMAND),
        *DATASET_ARGS,
        "--deliver",
        DELIVERY,
        "--home",
        host_home,
        "--json",
        now=entry["now"],
    )
    no_traceback(r)
    expect = entry["expect"]
    assert r.returncode == EXIT[exit_class(expect)], r.stderr
    if expect == "ok":
        out = json.loads(r.stdout)
        assert out["ok"] is True
        assert out["bundle_id"] == bundle_id_of(entry)
        assert out["task"] == TASK
        # verify releases nothing and consumes nothing: no receipt, no use.
        assert journal(host_home) == []
        assert uses(host_home, out["bundle_id"]) == 0
        return
    refusal = json.loads(r.stdout)  # --json reports a refusal on stdout too
    assert refusal["ok"] is False
    assert refusal["reason"] == journal(host_home)[0].reason
    check_refusal_stderr(r.stderr, entry)
    assert len(journal(host_home)) == 1
    check_denial_receipt(host_home, entry, "verify", COMMAND)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The child's working directory, holding export.py."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "export.py").write_text(EXPORT_PY)
    return work


def kit_run(
    home: Path, entry: dict[str, Any], work: Path
) -> subprocess.CompletedProcess[str]:
    assert DELIVERY == "env", "kit run delivers by env by default"
    return kit(
        "run",
        VECTORS / entry["file"],
        "--task",
        TASK,
        *DATASET_ARGS,
        "--home",
        home,
        "--",
        *COMMAND,
        now=entry["now"],
        cwd=work,
    )


@pytest.mark.parametrize("entry", of_kind("bundle"))
def test_bundle_run(entry: dict[str, Any], host_home: Path, workdir: Path) -> None:
    r = kit_run(host_home, entry, workdir)
    no_traceback(r)
    expect = entry["expect"]
    assert r.returncode == RUN_EXIT[exit_class(expect)], r.stderr
    out = workdir / OUT
    if expect == "ok":
        assert out.read_text() == entry["secret"]
        bid = bundle_id_of(entry)
        release, end = journal(host_home)
        assert (release.event, release.action, release.use) == ("release", "run", 1)
        assert (release.bundle_id, release.command) == (bid, COMMAND)
        assert (release.datasets, release.delivery) == (DATASETS, DELIVERY)
        assert (end.event, end.exit_status, end.bundle_id) == ("exit", 0, bid)
        assert uses(host_home, bid) == 1
        return
    assert not out.exists(), "a refused bundle reached the child"
    assert SECRET not in r.stdout + r.stderr
    check_refusal_stderr(r.stderr, entry)
    assert len(journal(host_home)) == 1
    check_denial_receipt(host_home, entry, "run", COMMAND)


def test_valid_bundle_runs_max_uses_times(host_home: Path, workdir: Path) -> None:
    """bundle-valid.kit carries max_uses 2: the third run is refused with
    uses-exhausted and the child does not start."""
    entry = ENTRIES["bundle-valid.kit"]
    max_uses = decode_claims(parse_bundle(read(entry["file"])).claims_bytes).max_uses
    for use in range(1, max_uses + 1):
        r = kit_run(host_home, entry, workdir)
        no_traceback(r)
        assert r.returncode == 0, r.stderr
        assert f"(use {use} of {max_uses})" in r.stderr
        assert (workdir / OUT).read_text() == entry["secret"]
        (workdir / OUT).unlink()
    r = kit_run(host_home, entry, workdir)
    no_traceback(r)
    assert r.returncode == RUN_EXIT["denied"], r.stderr
    assert "kit: denied [uses-exhausted]: " in r.stderr
    assert not (workdir / OUT).exists()
    *_, last = journal(host_home)
    assert (last.event, last.action, last.reason) == ("deny", "run", "uses-exhausted")
    assert len(journal(host_home)) == 2 * max_uses + 1
    assert uses(host_home, bundle_id_of(entry)) == max_uses
    # kit verify now refuses it too, for the same reason.
    r = kit("verify", VECTORS / entry["file"], "--task", TASK, "--home", host_home)
    assert r.returncode == EXIT["denied"]
    assert "kit: denied [uses-exhausted]: " in r.stderr


# -- trust roots: kit host init ---------------------------------------------------


@pytest.mark.parametrize("entry", of_kind("trust-root"))
def test_trust_root_host_init(entry: dict[str, Any], tmp_path: Path) -> None:
    home = tmp_path / "new-host"
    r = kit(
        "host",
        "init",
        "--name",
        HOST["name"],
        "--env",
        HOST["env"],
        "--trust",
        VECTORS / entry["file"],
        "--home",
        home,
        now=entry["now"],
    )
    no_traceback(r)
    expect = entry["expect"]
    assert r.returncode == EXIT[exit_class(expect)], r.stderr
    if expect != "ok":
        if expect == "UnauthenticatedError":
            assert "kit: denied: trust root is not validly signed" in r.stderr
        else:
            assert "kit: error: " in r.stderr
        # init_host reads the root before it creates anything.
        assert not home.exists(), sorted(p.name for p in home.iterdir())
        return
    data = read(entry["file"])
    digest = hashlib.sha256(data).digest()
    fp = " ".join(digest.hex()[i : i + 4] for i in range(0, 40, 4))
    assert fp in r.stderr
    assert (home / HOST_ROOT_FILE).read_bytes() == data
    e = load_enrollment((home / ENROLLMENT_FILE).read_bytes())
    assert (e.host, e.env, e.trust_root) == (HOST["name"], HOST["env"], digest)
    # faketime starts the clock at the vector's time and lets it run.
    assert entry["now"] <= e.created_at <= entry["now"] + 5
    assert load_trust_root(data).digest == digest
    host = Host(home)  # a usable home
    host.close()


# -- SHA256SUMS: kit import -------------------------------------------------------


@pytest.mark.parametrize("entry", of_kind("sha256sums"))
def test_sha256sums_import(
    entry: dict[str, Any], host_home: Path, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    # The files the valid manifest lists (the vectors' own bundle and root).
    listed = ENTRIES["sha256sums-valid.txt"]["file"]
    names = [line.split("  ")[1] for line in read(listed).decode().splitlines()]
    for name in names:
        (media / name).write_bytes(read(name))
    (media / "SHA256SUMS").write_bytes(read(entry["file"]))
    r = kit("import", media, "--home", host_home, "--json", now=entry["now"])
    no_traceback(r)
    inbox = sorted(p.name for p in (host_home / INBOX).iterdir())
    if entry["expect"] == "ok":
        assert r.returncode == 0, r.stderr
        bid = bundle_id_of(ENTRIES["bundle-valid.kit"])
        assert [b["bundle_id"] for b in json.loads(r.stdout)] == [bid]
        assert inbox == [f"{bid}.kit"]
        assert (host_home / INBOX / inbox[0]).read_bytes() == read("bundle-valid.kit")
        return
    assert r.returncode == 4, r.stderr
    assert "kit: error: " in r.stderr and "SHA256SUMS" in r.stderr
    assert r.stdout == ""
    assert inbox == []


# -- receipt batches: kit reconcile -----------------------------------------------


@pytest.fixture(scope="module")
def signer_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signer home that is the vectors' signer: its trust root, its issuer
    key (sealed-key.bin opens with the manifest passphrase) and a ledger
    holding the vector host and bundle-valid.kit, as tests/test_vectors.py
    builds it."""
    home = tmp_path_factory.mktemp("vector-signer") / "signer"
    init_signer(home, "vectors", PASSPHRASE, now=NOW, kdf_profile="interactive")
    atomic_write(home / SIGNER_ROOT_FILE, read(MANIFEST["trust_root"]))
    atomic_write(home / KEY_FILE, read("sealed-key.bin"), 0o600)
    signer = Signer(home)
    try:
        signer.unlock(PASSPHRASE)  # the key is the root's issuer
        signer.enroll(read("enrollment-valid.kit"), NOW)
        data = read("bundle-valid.kit")
        b = parse_bundle(data)
        c = decode_claims(b.claims_bytes)
        signer.ledger.record_bundle(
            IssuanceRecord(
                bundle_id=c.bundle_id,
                host=c.host,
                env=c.env,
                task=c.task,
                owner=c.owner,
                issuer=c.issuer,
                commands=c.commands,
                issued_at=c.issued_at,
                not_before=c.not_before,
                expires_at=c.expires_at,
                max_uses=c.max_uses,
                claims=b.claims_bytes,
                bundle_digest=hashlib.sha256(data).digest(),
                # Reconciliation never reads it; as in tests/test_vectors.py.
                secret_digest=bytes(32),
            )
        )
        assert c.issuer in signer.root.keys_for("issuer")
        rec = signer.ledger.get_host(HOST["name"])
        assert rec is not None
        assert rec.hpke_public == SealingKey(read(HOST["hpke_key"])).public_key
    finally:
        signer.close()
    return home


@pytest.mark.parametrize("entry", of_kind("receipt-batch"))
def test_receipt_batch_reconcile(
    entry: dict[str, Any], signer_template: Path, tmp_path: Path
) -> None:
    home = tmp_path / "signer"
    shutil.copytree(signer_template, home, symlinks=True)
    folders = []
    # One media folder per batch, in the order the library test reconciles them.
    for i, name in enumerate([*entry.get("with", []), entry["file"]]):
        folder = tmp_path / f"media-{i}"
        write_media(folder, {name: read(name)})
        folders.append(folder)
    r = kit("reconcile", *folders, "--home", home, "--json", now=entry["now"])
    no_traceback(r)
    report = json.loads(r.stdout)
    codes = [a["code"] for a in report["anomalies"]]
    assert codes == entry["anomalies"]
    assert (codes[0] if codes else "ok") == entry["expect"]
    assert report["clean"] is (entry["expect"] == "ok")
    assert r.returncode == (0 if entry["expect"] == "ok" else 1), r.stderr
    if entry["expect"] == "ok":
        [status] = report["bundles"]
        assert (status["status"], status["uses"]) == ("used", 1)
