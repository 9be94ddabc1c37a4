"""SQLite implementations of the storage interfaces.

Durability: ``synchronous=FULL`` so a COMMIT has reached the disk before it
returns; writers take ``BEGIN IMMEDIATE`` so concurrent processes serialise
on the database lock instead of racing on counts.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from kit.errors import HomeError, JournalError
from kit.storage.base import HostRecord, IssuanceRecord, ReceiptBuilder, UseRecord

GENESIS = bytes(32)


def _connect(path: Path, schema: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(schema)
    except sqlite3.Error as exc:
        raise HomeError(f"cannot open database {path}: {exc}") from None
    return conn


_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY, env TEXT NOT NULL, hpke_public BLOB NOT NULL,
    receipt_public BLOB NOT NULL, enrolled_at INTEGER NOT NULL,
    request_digest BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS bundles (
    bundle_id TEXT PRIMARY KEY, host TEXT NOT NULL REFERENCES hosts(name),
    env TEXT NOT NULL, task TEXT NOT NULL, owner TEXT NOT NULL,
    issuer TEXT NOT NULL, commands TEXT NOT NULL, issued_at INTEGER NOT NULL,
    not_before INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    max_uses INTEGER NOT NULL, claims BLOB NOT NULL, bundle_digest BLOB NOT NULL,
    secret_digest BLOB NOT NULL);
"""


class SqliteLedger:
    """The signer's issuance ledger."""

    def __init__(self, path: Path) -> None:
        self._db = _connect(path, _LEDGER_SCHEMA)

    def add_host(self, host: HostRecord) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO hosts VALUES (?, ?, ?, ?, ?, ?)",
                (
                    host.name,
                    host.env,
                    host.hpke_public,
                    host.receipt_public,
                    host.enrolled_at,
                    host.request_digest,
                ),
            )

    def get_host(self, name: str) -> HostRecord | None:
        row = self._db.execute("SELECT * FROM hosts WHERE name = ?", (name,)).fetchone()
        return HostRecord(*row) if row else None

    def hosts(self) -> list[HostRecord]:
        return [
            HostRecord(*r)
            for r in self._db.execute("SELECT * FROM hosts ORDER BY name")
        ]

    def record_bundle(self, rec: IssuanceRecord) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO bundles VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    rec.bundle_id,
                    rec.host,
                    rec.env,
                    rec.task,
                    rec.owner,
                    rec.issuer,
                    json.dumps([list(c) for c in rec.commands]),
                    rec.issued_at,
                    rec.not_before,
                    rec.expires_at,
                    rec.max_uses,
                    rec.claims,
                    rec.bundle_digest,
                    rec.secret_digest,
                ),
            )

    @staticmethod
    def _bundle(row: tuple[object, ...]) -> IssuanceRecord:
        values = list(row)
        values[6] = tuple(tuple(c) for c in json.loads(str(values[6])))
        return IssuanceRecord(*values)  # type: ignore[arg-type]

    def get_bundle(self, bundle_id: str) -> IssuanceRecord | None:
        row = self._db.execute(
            "SELECT * FROM bundles WHERE bundle_id = ?", (bundle_id,)
        ).fetchone()
        return self._bundle(row) if row else None

    def bundles(self) -> list[IssuanceRecord]:
        return [
            self._bundle(r)
            for r in self._db.execute(
                "SELECT * FROM bundles ORDER BY issued_at, bundle_id"
            )
        ]

    def close(self) -> None:
        self._db.close()


_HOST_SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS uses (
    bundle_id TEXT NOT NULL, use INTEGER NOT NULL, time INTEGER NOT NULL,
    seq INTEGER NOT NULL REFERENCES receipts(seq), PRIMARY KEY (bundle_id, use));
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class SqliteHostState:
    """The host's use counters and receipt journal, in one database so that a
    use and its release receipt commit together or not at all."""

    def __init__(self, path: Path) -> None:
        self._db = _connect(path, _HOST_SCHEMA)

    def head(self) -> tuple[int, bytes]:
        row = self._db.execute(
            "SELECT seq, hash FROM receipts ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (int(row[0]), bytes(row[1])) if row else (0, GENESIS)

    def _insert(self, build: ReceiptBuilder, use: int) -> tuple[int, bytes]:
        seq, prev = self.head()
        raw = build(seq + 1, prev, use)
        self._db.execute(
            "INSERT INTO receipts VALUES (?, ?, ?)",
            (seq + 1, hashlib.sha256(raw).digest(), raw),
        )
        return seq + 1, raw

    def release(
        self, bundle_id: str, max_uses: int, now: int, build: ReceiptBuilder
    ) -> tuple[int, bytes] | list[UseRecord]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                spent = self.uses(bundle_id)
                if len(spent) >= max_uses:
                    self._db.execute("ROLLBACK")
                    return spent
                use = len(spent) + 1
                seq, raw = self._insert(build, use)
                self._db.execute(
                    "INSERT INTO uses VALUES (?, ?, ?, ?)", (bundle_id, use, now, seq)
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise JournalError(
                f"the release receipt could not be written ({exc}); "
                "nothing was released"
            ) from None
        return use, raw

    def append(self, build: ReceiptBuilder) -> bytes:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                _, raw = self._insert(build, 0)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise JournalError(f"a receipt could not be written ({exc})") from None
        return raw

    def uses(self, bundle_id: str) -> list[UseRecord]:
        return [
            UseRecord(*r)
            for r in self._db.execute(
                "SELECT use, time, seq FROM uses WHERE bundle_id = ? ORDER BY use",
                (bundle_id,),
            )
        ]

    def receipts_after(self, seq: int) -> list[tuple[int, bytes]]:
        return [
            (int(s), bytes(r))
            for s, r in self._db.execute(
                "SELECT seq, raw FROM receipts WHERE seq > ? ORDER BY seq", (seq,)
            )
        ]

    def get(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def put(self, key: str, value: bytes) -> None:
        try:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value)
                )
        except sqlite3.Error as exc:
            raise JournalError(f"host state could not be written ({exc})") from None

    def close(self) -> None:
        self._db.close()
