"""SQLite implementations of the storage interfaces.

Durability: ``synchronous=FULL`` so a COMMIT has reached the disk before it
returns; writers take ``BEGIN IMMEDIATE`` so concurrent processes serialise
on the database lock instead of racing on counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from kit.errors import HomeError, JournalError
from kit.storage.base import HostRecord, IssuanceRecord, ReceiptBuilder, UseRecord

GENESIS = bytes(32)


def _connect(path: Path, schema: str, journal: str = "DELETE") -> sqlite3.Connection:
    try:
        # Private from the first byte; SQLite gives its journal the same mode.
        if not os.path.lexists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute(f"PRAGMA journal_mode={journal}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(schema)
    except (OSError, sqlite3.Error) as exc:
        raise HomeError(f"cannot open database {path}: {exc}") from None
    return conn


@contextlib.contextmanager
def _immediate(
    db: sqlite3.Connection, failure: str, error: type[HomeError | JournalError]
) -> Iterator[None]:
    """One IMMEDIATE transaction: committed (and synced) on leaving, rolled
    back on any exception; a database error becomes ``error`` naming
    ``failure`` and SQLite's reason."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise error(f"{failure} ({exc})") from None


_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY, env TEXT NOT NULL, hpke_public BLOB NOT NULL,
    receipt_public BLOB NOT NULL, enrolled_at INTEGER NOT NULL,
    request_digest BLOB NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS bundles (
    bundle_id TEXT PRIMARY KEY, host TEXT NOT NULL REFERENCES hosts(name),
    env TEXT NOT NULL, task TEXT NOT NULL, owner TEXT NOT NULL,
    issuer TEXT NOT NULL, commands TEXT NOT NULL, issued_at INTEGER NOT NULL,
    not_before INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    max_uses INTEGER NOT NULL, claims BLOB NOT NULL, bundle_digest BLOB NOT NULL,
    secret_digest BLOB NOT NULL, identity TEXT NOT NULL, risk TEXT NOT NULL,
    datasets TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS revocations (
    kind TEXT NOT NULL, value TEXT NOT NULL, added_at INTEGER NOT NULL,
    PRIMARY KEY (kind, value)) STRICT;
CREATE TABLE IF NOT EXISTS anchors (
    host TEXT PRIMARY KEY, seq INTEGER NOT NULL, head BLOB NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS usage (
    bundle_id TEXT PRIMARY KEY REFERENCES bundles(bundle_id),
    uses INTEGER NOT NULL, last_use INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS ledger_exports (
    seq INTEGER PRIMARY KEY, digest BLOB NOT NULL, time INTEGER NOT NULL,
    hosts_to INTEGER NOT NULL, bundles_to INTEGER NOT NULL,
    revocations_to INTEGER NOT NULL, raw BLOB NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS ledger_exports_prepared (
    seq INTEGER PRIMARY KEY, digest BLOB NOT NULL, time INTEGER NOT NULL,
    hosts_to INTEGER NOT NULL, bundles_to INTEGER NOT NULL,
    revocations_to INTEGER NOT NULL, raw BLOB NOT NULL) STRICT;
"""


class SqliteLedger:
    """The signer's issuance ledger."""

    def __init__(self, path: Path) -> None:
        # Write-ahead log with synchronous=FULL: each issuance is durable when
        # its commit returns, at the price of one fsync (of the log) instead
        # of the rollback journal's several (docs/BENCHMARKS.md).
        self._db = _connect(path, _LEDGER_SCHEMA, journal="WAL")
        self._path = path

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
        import json  # the ledger's only; the host's hot path never loads it

        with self._db:
            self._db.execute(
                "INSERT INTO bundles VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                    rec.identity,
                    rec.risk,
                    json.dumps(list(rec.datasets)),
                ),
            )

    @staticmethod
    def _bundle(row: tuple[object, ...]) -> IssuanceRecord:
        import json

        values = list(row)
        values[6] = tuple(tuple(c) for c in json.loads(str(values[6])))
        values[16] = tuple(json.loads(str(values[16])))
        return IssuanceRecord(*values)  # type: ignore[arg-type]

    def get_bundle(self, bundle_id: str) -> IssuanceRecord | None:
        row = self._db.execute(
            "SELECT * FROM bundles WHERE bundle_id = ?", (bundle_id,)
        ).fetchone()
        return self._bundle(row) if row else None

    def record_usage(self, bundle_id: str, uses: int, last_use: int) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO usage VALUES (?, ?, ?) ON CONFLICT(bundle_id) DO UPDATE "
                "SET uses = max(uses, excluded.uses), "
                "last_use = max(last_use, excluded.last_use)",
                (bundle_id, uses, last_use),
            )

    def add_revocation(self, kind: str, value: str, now: int) -> bool:
        """Record an entry; False when it was already there."""
        with self._db:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO revocations VALUES (?, ?, ?)", (kind, value, now)
            )
        return cur.rowcount == 1

    def revocations(self) -> list[tuple[str, str]]:
        return [
            (str(k), str(v))
            for k, v in self._db.execute(
                "SELECT kind, value FROM revocations ORDER BY kind, value"
            )
        ]

    def record_anchor(self, host: str, seq: int, head: bytes) -> None:
        """Keep the newest reconciled receipt per host (never moves back)."""
        with self._db:
            self._db.execute(
                "INSERT INTO anchors VALUES (?, ?, ?) ON CONFLICT(host) DO UPDATE "
                "SET seq = excluded.seq, head = excluded.head "
                "WHERE excluded.seq > anchors.seq",
                (host, seq, head),
            )

    def anchor(self, host: str) -> tuple[int, bytes] | None:
        row = self._db.execute(
            "SELECT seq, head FROM anchors WHERE host = ?", (host,)
        ).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def next_counter(self, name: str) -> int:
        """Increment and return a named counter (e.g. the list version)."""
        with self._db:
            self._db.execute(
                "INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE "
                "SET value = value + 1",
                (name,),
            )
            row = self._db.execute(
                "SELECT value FROM counters WHERE name = ?", (name,)
            ).fetchone()
        return int(row[0])

    def usage(self) -> dict[str, tuple[int, int]]:
        return {
            str(b): (int(u), int(t))
            for b, u, t in self._db.execute(
                "SELECT bundle_id, uses, last_use FROM usage"
            )
        }

    def bundles(self) -> list[IssuanceRecord]:
        return [
            self._bundle(r)
            for r in self._db.execute(
                "SELECT * FROM bundles ORDER BY issued_at, bundle_id"
            )
        ]

    # -- ledger exports (FORMAT.md 14); the rowid of each table is the
    # ledger's own sequence number, which only grows

    def last_export(self) -> tuple[int, bytes, int, int, int]:
        """(export seq, its digest, hosts, bundles and revocations rowids it
        covered up to); zeros and the genesis digest before the first."""
        row = self._db.execute(
            "SELECT seq, digest, hosts_to, bundles_to, revocations_to "
            "FROM ledger_exports ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return 0, GENESIS, 0, 0, 0
        return int(row[0]), bytes(row[1]), int(row[2]), int(row[3]), int(row[4])

    def hosts_after(self, rowid: int) -> list[tuple[int, HostRecord]]:
        return [
            (int(r[0]), HostRecord(*r[1:]))
            for r in self._db.execute(
                "SELECT rowid, * FROM hosts WHERE rowid > ? ORDER BY rowid", (rowid,)
            )
        ]

    def bundles_after(self, rowid: int, limit: int) -> list[tuple[int, IssuanceRecord]]:
        return [
            (int(r[0]), self._bundle(r[1:]))
            for r in self._db.execute(
                "SELECT rowid, * FROM bundles WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (rowid, limit),
            )
        ]

    def max_bundle_rowid(self) -> int:
        row = self._db.execute("SELECT max(rowid) FROM bundles").fetchone()
        return int(row[0] or 0)

    def revocations_after(self, rowid: int) -> list[tuple[int, str, str, int]]:
        return [
            (int(i), str(k), str(v), int(t))
            for i, k, v, t in self._db.execute(
                "SELECT rowid, kind, value, added_at FROM revocations "
                "WHERE rowid > ? ORDER BY rowid",
                (rowid,),
            )
        ]

    def record_export(
        self, seq: int, digest: bytes, time: int, upto: tuple[int, int, int], raw: bytes
    ) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO ledger_exports VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, digest, time, *upto, raw),
            )

    def export_snapshot(self) -> contextlib.AbstractContextManager[None]:
        """One IMMEDIATE transaction for preparing exports: everything read
        inside it is one consistent state of the ledger (a host enrolled
        meanwhile is either in it or left for the next export), and a
        concurrent export waits. Committed on leaving, rolled back on error;
        a database error becomes HomeError, as when the ledger is opened."""
        failure = f"the issuance ledger {self._path} could not be read or written"
        return _immediate(self._db, failure, HomeError)

    def prepared_exports(self) -> list[tuple[bytes, tuple[int, int, int]]]:
        """Exports signed but not yet committed (a run that stopped between
        signing and committing), (envelope bytes, rowids covered), oldest
        first: they are written again byte for byte, never re-signed."""
        return [
            (bytes(r[3]), (int(r[0]), int(r[1]), int(r[2])))
            for r in self._db.execute(
                "SELECT hosts_to, bundles_to, revocations_to, raw "
                "FROM ledger_exports_prepared ORDER BY seq"
            )
        ]

    def record_prepared(
        self, seq: int, digest: bytes, time: int, upto: tuple[int, int, int], raw: bytes
    ) -> None:
        """Inside :meth:`export_snapshot`: remember an export before it is
        written to media."""
        self._db.execute(
            "INSERT INTO ledger_exports_prepared VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, digest, time, *upto, raw),
        )

    def commit_exports(
        self, rows: list[tuple[int, bytes, int, tuple[int, int, int], bytes]]
    ) -> None:
        """Record exports as made (all or none) and forget them as prepared.
        An export already recorded with the same digest (a concurrent run
        wrote the same prepared bytes) is no error; another digest is."""
        with self.export_snapshot():
            for seq, digest, time, upto, raw in rows:
                known = self._db.execute(
                    "SELECT digest FROM ledger_exports WHERE seq = ?", (seq,)
                ).fetchone()
                if known is None:
                    self._db.execute(
                        "INSERT INTO ledger_exports VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (seq, digest, time, *upto, raw),
                    )
                elif bytes(known[0]) != digest:
                    raise HomeError(
                        f"ledger export {seq} was already recorded with other "
                        "bytes; the ledger changed under this run, nothing recorded"
                    )
                self._db.execute(
                    "DELETE FROM ledger_exports_prepared WHERE seq = ?", (seq,)
                )

    def exports(self) -> list[tuple[int, bytes]]:
        """Every export made, (seq, envelope bytes), oldest first."""
        return [
            (int(s), bytes(r))
            for s, r in self._db.execute(
                "SELECT seq, raw FROM ledger_exports ORDER BY seq"
            )
        ]

    def close(self) -> None:
        self._db.close()


_HOST_SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, raw BLOB NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS uses (
    bundle_id TEXT NOT NULL, use INTEGER NOT NULL, time INTEGER NOT NULL,
    seq INTEGER NOT NULL REFERENCES receipts(seq), PRIMARY KEY (bundle_id, use))
    STRICT;
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT;
"""


class SqliteHostState:
    """The host's use counters and receipt journal, in one database so that a
    use and its release receipt commit together or not at all.

    Journal rules (docs/FORMAT.md 7.3): the counter ``last_seq``/``last_hash``
    in ``kv`` moves in the same transaction as the receipt it counts, so a
    crash leaves both or neither (SQLite rolls back a torn commit when the
    database is next opened); a journal whose newest receipt is not the one
    the counter names has lost entries and is refused; a sequence number is
    never reused because the next one comes from the counter. The clock floor
    ``clock_floor`` only ever rises, in the same transactions.
    """

    def __init__(self, path: Path) -> None:
        self._db = _connect(path, _HOST_SCHEMA)

    def _kv_int(self, key: str) -> int:
        value = self.get(key)
        return int(value.decode()) if value else 0

    def head(self) -> tuple[int, bytes]:
        """(last sequence number, its receipt hash) as the counter records them."""
        return self._kv_int("last_seq"), self.get("last_hash") or GENESIS

    def floor(self) -> int:
        return self._kv_int("clock_floor")

    def check_journal(self) -> None:
        """Refuse a journal that lost entries or whose last record is damaged."""
        try:
            seq, digest = self.head()
            row = self._db.execute(
                "SELECT seq, CAST(hash AS BLOB), CAST(raw AS BLOB) FROM receipts "
                "ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            count = self._db.execute("SELECT count(*) FROM receipts").fetchone()[0]
        except (sqlite3.Error, ValueError) as exc:
            raise JournalError(f"the receipt journal cannot be read ({exc})") from None
        have = int(row[0]) if row else 0
        if have != seq or (row and bytes(row[1]) != digest):
            raise JournalError(
                f"the receipt journal is behind its own counter (newest receipt "
                f"{have}, counter {seq}): receipts were deleted or replaced; "
                "refusing to continue"
            )
        if row and hashlib.sha256(bytes(row[2])).digest() != digest:
            raise JournalError(f"receipt {seq} in the journal is damaged")
        if count != seq:
            raise JournalError(
                f"the receipt journal holds {count} receipts but counts {seq}: "
                "receipts were deleted"
            )

    def _insert(self, build: ReceiptBuilder, use: int, floor: int) -> tuple[int, bytes]:
        self.check_journal()
        seq, prev = self.head()
        raw = build(seq + 1, prev, use)
        digest = hashlib.sha256(raw).digest()
        self._db.execute(
            "INSERT INTO receipts VALUES (?, ?, ?)", (seq + 1, digest, raw)
        )
        self._db.executemany(
            "INSERT OR REPLACE INTO kv VALUES (?, ?)",
            [
                ("last_seq", str(seq + 1).encode()),
                ("last_hash", digest),
                ("clock_floor", str(max(self.floor(), floor)).encode()),
            ],
        )
        return seq + 1, raw

    def _writing(self, failure: str) -> contextlib.AbstractContextManager[None]:
        """One IMMEDIATE transaction: committed (and synced) on leaving, rolled
        back on any exception; a database error becomes JournalError."""
        return _immediate(self._db, failure, JournalError)

    def release(
        self,
        bundle_id: str,
        max_uses: int,
        now: int,
        build: ReceiptBuilder,
        floor: int,
    ) -> tuple[int, bytes] | list[UseRecord]:
        failure = "the release receipt could not be written; nothing was released"
        with self._writing(failure):
            spent = self.uses(bundle_id)
            if len(spent) >= max_uses:
                return spent  # nothing written
            use = len(spent) + 1
            seq, raw = self._insert(build, use, floor)
            self._db.execute(
                "INSERT INTO uses VALUES (?, ?, ?, ?)", (bundle_id, use, now, seq)
            )
        return use, raw

    def append(self, build: ReceiptBuilder, floor: int) -> bytes:
        with self._writing("a receipt could not be written"):
            _, raw = self._insert(build, 0, floor)
        return raw

    def uses(self, bundle_id: str) -> list[UseRecord]:
        return [
            UseRecord(*r)
            for r in self._db.execute(
                "SELECT use, time, seq FROM uses WHERE bundle_id = ? ORDER BY use",
                (bundle_id,),
            )
        ]

    def hash_at(self, seq: int) -> bytes | None:
        row = self._db.execute(
            "SELECT CAST(hash AS BLOB) FROM receipts WHERE seq = ?", (seq,)
        ).fetchone()
        return bytes(row[0]) if row else None

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
