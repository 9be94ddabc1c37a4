"""Shared fixtures: a signer, three enrolled hosts and an attacker, built once
per session and copied into each test's own tmp_path.

Time: library calls take ``now``; the CLI reads the real clock. ``T0`` is the
real time when the session started, so bundles issued "now" in the library
are also current for the CLI, and bundles issued at ``T0 - 10 days`` or
``T0 + 10 days`` look expired or not yet valid to it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kit import encoding
from kit.crypto.seal import seal
from kit.crypto.sign import SigningKey, key_id
from kit.formats import bundle as bundle_fmt
from kit.formats.envelope import seal_envelope, verify_envelope
from kit.formats.receipt import GENESIS, Receipt, parse_receipt
from kit.host.host import Host, init_host
from kit.signer.signer import ROOT_FILE, IssueRequest, Signer, init_signer
from kit.storage.base import HostRecord

DAY = 24 * 3600
T0 = int(time.time())
PASSPHRASE = b"correct horse battery staple"
KIT = Path(sys.executable).parent / "kit"

# (name, env) of every host home; the signer enrolls all three.
HOSTS = {"build-01": "prod", "build-02": "prod", "build-03": "dev"}
TASK = "nightly-export"

# The child: writes the env var it receives to the file named by $0 and exits
# with the status given as $1. A bundle allows this argv prefix, so the out
# file and status are free arguments after it.
CHILD = ("sh", "-c", 'printf %s "$KIT_SECRET" > "$0"; exit "${1:-0}"')


def child_argv(out: Path, status: int = 0) -> tuple[str, ...]:
    return (*CHILD, str(out), str(status))


def new_secret() -> bytes:
    return b"tok-" + secrets.token_hex(20).encode()


@dataclass(frozen=True)
class Issued:
    data: bytes
    claims: bundle_fmt.Claims
    secret: bytes


class World:
    """One test's copy of the signer, host and attacker homes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.signer_home = root / "signer"
        self.attacker_home = root / "attacker"
        self.root_bytes = (self.signer_home / ROOT_FILE).read_bytes()
        self._signer: Signer | None = None
        self._attacker: Signer | None = None
        self.passfile = root / "passphrase"
        self.passfile.write_bytes(PASSPHRASE + b"\n")
        self.passfile.chmod(0o600)

    # -- homes ----------------------------------------------------------------

    def host_home(self, name: str) -> Path:
        return self.root / "hosts" / name

    def _open(self, home: Path) -> Signer:
        s = Signer(home)
        s.unlock(PASSPHRASE)
        return s

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            self._signer = self._open(self.signer_home)
        return self._signer

    @property
    def attacker(self) -> Signer:
        """A signer whose key is not in the hosts' trust root."""
        if self._attacker is None:
            self._attacker = self._open(self.attacker_home)
        return self._attacker

    def close(self) -> None:
        for s in (self._signer, self._attacker):
            if s is not None:
                s.close()

    def host_record(self, name: str) -> HostRecord:
        rec = self.signer.ledger.get_host(name)
        assert rec is not None
        return rec

    # -- issuing --------------------------------------------------------------

    def issue(
        self,
        host: str = "build-01",
        *,
        now: int = T0,
        secret: bytes | None = None,
        by: Signer | None = None,
        **overrides: Any,
    ) -> Issued:
        """Issue through ``Signer.issue`` (ledger and all) with field overrides."""
        fields: dict[str, Any] = {
            "host": host,
            "env": HOSTS.get(host, "prod"),
            "task": TASK,
            "commands": (CHILD,),
            "ttl": 3600,
            "max_uses": 1,
            "secret_name": "KIT_SECRET",
            "owner": "ops",
        }
        fields.update(overrides)
        secret = new_secret() if secret is None else secret
        data, claims = (by or self.signer).issue(IssueRequest(**fields), secret, now)
        return Issued(data, claims, secret)

    def forge(
        self,
        key: SigningKey,
        *,
        host: str = "build-01",
        seal_to: str | None = None,
        now: int = T0,
        secret: bytes | None = None,
        sealed: bytes | None = None,
        **claim_overrides: Any,
    ) -> Issued:
        """Build and sign a bundle directly, bypassing the signer's checks and
        ledger: for claims ``Signer.issue`` refuses to make (another env than
        the host's), for splicing ciphertext, and for bundles the ledger never
        saw."""
        rec = self.host_record(host)
        target = self.host_record(seal_to or host)
        values: dict[str, Any] = {
            "bundle_id": secrets.token_hex(16),
            "issuer": key.key_id,
            "owner": "ops",
            "host": rec.name,
            "host_key": key_id(rec.hpke_public),
            "env": rec.env,
            "task": TASK,
            "commands": (CHILD,),
            "secret_name": "KIT_SECRET",
            "issued_at": now,
            "not_before": now,
            "expires_at": now + 3600,
            "max_uses": 1,
        }
        values.update(claim_overrides)
        claims = bundle_fmt.Claims(**values)
        claims_bytes = encoding.encode(claims.to_map())
        secret = new_secret() if secret is None else secret
        if sealed is None:
            sealed = seal(
                secret, target.hpke_public, bundle_fmt.seal_info_for(claims_bytes)
            )
        data = seal_envelope(
            bundle_fmt.LABEL, bundle_fmt.encode_body(claims_bytes, sealed), [key]
        )
        return Issued(data, claims, secret)

    def add_approver(self, label: str = "approver") -> SigningKey:
        """Give the signer's trust root an approver key (a new version, which
        the hosts do not receive unless a test carries it)."""
        from kit.formats.trustroot import KeySpec

        key = SigningKey.generate()
        self.signer.rotate(T0, add=(KeySpec(key.public_key, ("approver",), label),))
        return key

    def use_and_export(self, folder: Path, out: Path) -> Issued:
        """Issue a bundle, release it once on build-01 (the child's secret
        would go to ``out``), record its exit, export the receipts to
        ``folder``: one release, one exit, one batch."""
        issued = self.issue()
        host = self.host()
        try:
            release = host.authorize(
                issued.data, task=TASK, command=child_argv(out), now=T0
            )
            host.record_exit(release, status=0, duration_ms=1, now=T0 + 1)
            host.export_receipts(folder, T0 + 2)
        finally:
            host.close()
        return issued

    def damage_ledger_table(self, table: str) -> None:
        """Close the signer (the CLI opens its home itself) and overwrite the
        root page of ``table`` in the ledger with 0xff bytes, as a failing
        disk might: SQLite then reports the database malformed."""
        self.close()
        self._signer = None
        ledger = self.signer_home / "ledger.db"
        db = sqlite3.connect(ledger)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            (size,) = db.execute("PRAGMA page_size").fetchone()
            (page,) = db.execute(
                "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
            ).fetchone()
        finally:
            db.close()
        with open(ledger, "r+b") as f:
            f.seek((page - 1) * size)
            f.write(b"\xff" * size)

    # -- host state, read from outside ----------------------------------------

    def host(self, name: str = "build-01") -> Host:
        return Host(self.host_home(name))

    def receipts(self, name: str = "build-01") -> list[Receipt]:
        """Every receipt in the host's journal, after checking each one's
        signature (by the enrolled receipt key) and hash link."""
        h = self.host(name)
        try:
            rows = h.state.receipts_after(0)
        finally:
            h.close()
        pub = self.host_record(name).receipt_public
        out: list[Receipt] = []
        prev = GENESIS
        for seq, raw in rows:
            sr = parse_receipt(raw)
            verify_envelope(sr.envelope, {key_id(pub): pub}, threshold=1, what="r")
            assert sr.receipt.seq == seq == len(out) + 1
            assert sr.receipt.prev == prev
            prev = hashlib.sha256(raw).digest()
            out.append(sr.receipt)
        return out

    def uses(self, name: str = "build-01") -> list[tuple[Any, ...]]:
        db = sqlite3.connect(
            f"file:{self.host_home(name) / 'state.db'}?mode=ro", uri=True
        )
        try:
            return db.execute("SELECT * FROM uses ORDER BY bundle_id, use").fetchall()
        finally:
            db.close()

    # -- the CLI --------------------------------------------------------------

    def kit(
        self,
        *args: str | Path,
        passfile: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the real ``kit`` script; stdout and stderr are captured."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
        env["KIT_PASSPHRASE_FILE"] = str(passfile or self.passfile)
        return subprocess.run(
            [str(KIT), *map(str, args)],
            env=env,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )


def quote(argv: tuple[str, ...]) -> str:
    return shlex.join(argv)


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the homes once; every test gets a private copy."""
    root = tmp_path_factory.mktemp("template")
    start = T0 - 30 * DAY
    init_signer(
        root / "signer", "acme", PASSPHRASE, now=start, kdf_profile="interactive"
    )
    init_signer(
        root / "attacker", "evil", PASSPHRASE, now=start, kdf_profile="interactive"
    )
    root_bytes = (root / "signer" / ROOT_FILE).read_bytes()
    signer = Signer(root / "signer")
    attacker = Signer(root / "attacker")
    try:
        for name, env in HOSTS.items():
            request, _ = init_host(root / "hosts" / name, name, env, root_bytes, start)
            e = signer.enroll(request, start)
            # The attacker knows the hosts' public keys (they are not secret)
            # but cannot enroll them: the requests pin another trust root.
            attacker.ledger.add_host(
                HostRecord(
                    e.host, e.env, e.hpke_public, e.receipt_public, start, bytes(32)
                )
            )
    finally:
        signer.close()
        attacker.close()
    return root


@pytest.fixture
def world(world_template: Path, tmp_path: Path) -> Iterator[World]:
    root = tmp_path / "world"
    shutil.copytree(world_template, root, symlinks=True)
    w = World(root)
    try:
        yield w
    finally:
        w.close()
