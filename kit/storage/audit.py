"""The auditor's state (docs/auditor.md): one SQLite database in the auditor
home, so memory stays bounded whatever the number of receipts.

Everything ingested is keyed by content: inputs by the SHA-256 of their
bytes, receipts by (host, seq) with their hash, exports by their number and
digest. Statuses and exceptions are recomputed from these tables on every
run (:meth:`AuditStore.evaluate`), so arrival order does not matter and
feeding the same input twice changes nothing.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

from kit.audit.codes import CODES, SEVERITIES
from kit.errors import HomeError
from kit.storage.sqlite import _connect

# Indexes a large ingestion drops and builds again at its end
# (:meth:`AuditStore.defer_indexes`); every open creates any missing, so a
# crash in between leaves a store that is whole again when next opened.
_INDEX_SQL = (
    "CREATE INDEX IF NOT EXISTS issuances_lseq ON issuances(lseq)",
    "CREATE INDEX IF NOT EXISTS receipts_use "
    "ON receipts(bundle_id, event, time, task, input)",
)
_INDEXES = "".join(f"{sql};\n" for sql in _INDEX_SQL)

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS inputs (
    id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE, kind TEXT NOT NULL,
    source TEXT NOT NULL, size INTEGER NOT NULL, seen_at INTEGER NOT NULL,
    outcome TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS exports (
    seq INTEGER PRIMARY KEY, digest BLOB NOT NULL, prev BLOB NOT NULL,
    time INTEGER NOT NULL, first_lseq INTEGER NOT NULL, last_lseq INTEGER NOT NULL,
    input INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY, env TEXT NOT NULL, key_id TEXT NOT NULL UNIQUE,
    receipt_key BLOB NOT NULL, enrolled_at INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS issuances (
    bundle_id TEXT PRIMARY KEY, lseq INTEGER NOT NULL, host TEXT NOT NULL,
    env TEXT NOT NULL, task TEXT NOT NULL, identity TEXT NOT NULL,
    owner TEXT NOT NULL, issuer TEXT NOT NULL, issued_at INTEGER NOT NULL,
    not_before INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    max_uses INTEGER NOT NULL, claims_digest BLOB NOT NULL,
    bundle_digest BLOB NOT NULL, input INTEGER NOT NULL) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revocations (
    kind TEXT NOT NULL, value TEXT NOT NULL, added_at INTEGER NOT NULL,
    PRIMARY KEY (kind, value)) STRICT;
CREATE TABLE IF NOT EXISTS receipts (
    host TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL,
    prev BLOB NOT NULL, time INTEGER NOT NULL, event TEXT NOT NULL,
    bundle_id TEXT NOT NULL, task TEXT NOT NULL, reason TEXT NOT NULL,
    input INTEGER NOT NULL, PRIMARY KEY (host, seq)) STRICT, WITHOUT ROWID;
DROP INDEX IF EXISTS receipts_bundle;
CREATE TABLE IF NOT EXISTS forks (
    host TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL,
    input INTEGER NOT NULL, PRIMARY KEY (host, seq, hash)) STRICT;
CREATE TABLE IF NOT EXISTS checkpoints (
    digest BLOB PRIMARY KEY, host TEXT NOT NULL, first_seq INTEGER NOT NULL,
    seq INTEGER NOT NULL, head BLOB NOT NULL, time INTEGER NOT NULL,
    input INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS findings (
    code TEXT NOT NULL, host TEXT NOT NULL, seq INTEGER NOT NULL,
    bundle_id TEXT NOT NULL, message TEXT NOT NULL, input INTEGER NOT NULL,
    PRIMARY KEY (code, host, seq, bundle_id, input, message)) STRICT;
CREATE TABLE IF NOT EXISTS pending (
    input INTEGER PRIMARY KEY, data BLOB NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS statuses (
    bundle_id TEXT PRIMARY KEY, status TEXT NOT NULL, uses INTEGER NOT NULL,
    denials INTEGER NOT NULL, last_use INTEGER NOT NULL) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS exceptions (
    id INTEGER PRIMARY KEY, code TEXT NOT NULL, severity INTEGER NOT NULL,
    host TEXT NOT NULL, seq INTEGER NOT NULL, bundle_id TEXT NOT NULL,
    message TEXT NOT NULL, input INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS cover (host TEXT PRIMARY KEY, until INTEGER NOT NULL)
    STRICT;
"""
    + _INDEXES
)


# The rules a revocation entry uses to name a bundle (FORMAT.md 12.1), as SQL
# over ``v`` (revocations) and ``i`` (issuances).
_NAMES = (
    "((v.kind = 'bundle' AND v.value = i.bundle_id)"
    " OR (v.kind = 'identity' AND i.identity != '' AND v.value = i.identity)"
    " OR (v.kind = 'host' AND v.value = i.host)"
    " OR (v.kind = 'env' AND v.value = i.env)"
    " OR (v.kind = 'key' AND v.value = i.issuer)"
    " OR (v.kind = 'before' AND i.issued_at < CAST(v.value AS INTEGER)))"
)


_INSERT_EXCEPTION = (
    "INSERT INTO exceptions (code, severity, host, seq, bundle_id, message, "
    "input) SELECT :code, :sev, * FROM ("
)


# The same over ``rel`` (as ``i``), whose issuance columns are renamed.
_NAMES_REL = _NAMES.replace("i.host", "i.ihost").replace("i.env", "i.ienv")


def _sev(code: str) -> int:
    return SEVERITIES.index(CODES[code].severity)


class AuditStore:
    """The auditor's database. Writers use one transaction per input."""

    def __init__(self, path: Path) -> None:
        # Durability: WAL with synchronous=NORMAL never corrupts the store; a
        # power cut may lose the last commits, i.e. the last inputs of a run,
        # and feeding them again restores them (an input is known by its
        # digest only once committed). The store is not a copy of its
        # inputs, so it is kept durable rather than rebuilt: keep the input
        # files if it must be rebuildable.
        self.db = _connect(path, _SCHEMA, journal="WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-262144")  # 256 MiB at most
        self.db.execute("PRAGMA temp_store=FILE")  # sorts of a million rows

    def commit_point(self) -> None:
        """Inside :meth:`transaction`: make everything so far durable and go
        on in a new transaction. Ingestion commits a group of inputs at a
        time, so pages of the random-keyed indexes are written once per group
        rather than once per input."""
        if self.db.in_transaction:
            self.db.execute("COMMIT")
            self.db.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One explicit transaction (the connection is in autocommit mode,
        where every statement would commit alone): all of it or nothing.
        Nested inside another, a savepoint: all of it or nothing, committed
        with the outer one."""
        nested = self.db.in_transaction
        begin, end, undo = (
            ("SAVEPOINT one", "RELEASE one", "ROLLBACK TO one")
            if nested
            else ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
        )
        try:
            self.db.execute(begin)
            try:
                yield
                self.db.execute(end)
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute(undo)
                    if nested:
                        self.db.execute(end)
                raise
        except sqlite3.Error as exc:
            raise HomeError(f"the audit database cannot be written ({exc})") from None

    # -- inputs ---------------------------------------------------------------

    def input_outcome(self, digest: bytes) -> tuple[int, str] | None:
        row = self.db.execute(
            "SELECT id, outcome FROM inputs WHERE digest = ?", (digest,)
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def add_input(
        self, digest: bytes, kind: str, source: str, size: int, now: int
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO inputs (digest, kind, source, size, seen_at, outcome) "
            "VALUES (?, ?, ?, ?, ?, 'new')",
            (digest, kind, source, size, now),
        )
        return int(cur.lastrowid or 0)

    def set_outcome(self, input_id: int, outcome: str) -> None:
        self.db.execute(
            "UPDATE inputs SET outcome = ? WHERE id = ?", (outcome, input_id)
        )

    def inputs(self) -> Iterator[tuple[str, str, str, int, str]]:
        """(sha256 hex, kind, source, size, outcome) of every input."""
        for d, k, s, n, o in self.db.execute(
            "SELECT digest, kind, source, size, outcome FROM inputs ORDER BY id"
        ):
            yield bytes(d).hex(), str(k), str(s), int(n), str(o)

    def finding(
        self,
        code: str,
        message: str,
        input_id: int,
        host: str = "",
        seq: int = 0,
        bundle_id: str = "",
    ) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO findings VALUES (?, ?, ?, ?, ?, ?)",
            (code, host, seq, bundle_id, message, input_id),
        )

    def add_pending(self, input_id: int, data: bytes) -> None:
        self.db.execute("INSERT OR IGNORE INTO pending VALUES (?, ?)", (input_id, data))

    def pending(self) -> list[int]:
        return [int(r[0]) for r in self.db.execute("SELECT input FROM pending")]

    def pending_data(self, input_id: int) -> tuple[bytes, str]:
        row = self.db.execute(
            "SELECT p.data, i.source FROM pending p JOIN inputs i ON i.id = p.input "
            "WHERE p.input = ?",
            (input_id,),
        ).fetchone()
        return bytes(row[0]), str(row[1])

    def drop_pending(self, input_id: int) -> None:
        self.db.execute("DELETE FROM pending WHERE input = ?", (input_id,))

    # -- the ledger side -----------------------------------------------------

    def export_digest(self, seq: int) -> bytes | None:
        row = self.db.execute(
            "SELECT digest FROM exports WHERE seq = ?", (seq,)
        ).fetchone()
        return bytes(row[0]) if row else None

    def add_export(
        self,
        seq: int,
        digest: bytes,
        prev: bytes,
        time: int,
        lseqs: tuple[int, int],
        input_id: int,
    ) -> None:
        self.db.execute(
            "INSERT INTO exports VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, digest, prev, time, *lseqs, input_id),
        )

    def add_hosts(self, rows: Iterable[tuple[str, str, str, bytes, int]]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO hosts VALUES (?, ?, ?, ?, ?)", rows)

    def add_issuances(self, rows: Iterable[tuple[Any, ...]]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO issuances VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def add_revocations(self, rows: Iterable[tuple[str, str, int]]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO revocations VALUES (?, ?, ?)", rows)

    def host_keys(self) -> dict[str, tuple[str, bytes]]:
        """key id -> (host name, receipt public key)."""
        return {
            str(k): (str(n), bytes(p))
            for k, n, p in self.db.execute(
                "SELECT key_id, name, receipt_key FROM hosts"
            )
        }

    # -- the receipt side ----------------------------------------------------

    def held(self, host: str, lo: int, hi: int) -> dict[int, bytes]:
        return {
            int(s): bytes(h)
            for s, h in self.db.execute(
                "SELECT seq, hash FROM receipts WHERE host = ? AND seq BETWEEN ? AND ?",
                (host, lo, hi),
            )
        }

    def row_count(self) -> int:
        """Receipts and issuances held."""
        return int(
            self.db.execute(
                "SELECT (SELECT count(*) FROM receipts) "
                "+ (SELECT count(*) FROM issuances)"
            ).fetchone()[0]
        )

    def defer_indexes(self) -> None:
        """Inside a transaction, before adding many receipts or issuances:
        drop the secondary indexes of both, so that each row is not a random
        insert into them; :meth:`build_indexes` makes them again, each in
        one sort."""
        self.db.execute("DROP INDEX IF EXISTS receipts_use")
        self.db.execute("DROP INDEX IF EXISTS issuances_lseq")

    def build_indexes(self) -> None:
        """Inside the same transaction: the indexes dropped, made again."""
        for sql in _INDEX_SQL:
            self.db.execute(sql)

    def add_receipts(self, rows: list[tuple[Any, ...]]) -> None:
        self.db.executemany(
            "INSERT INTO receipts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        )

    def add_fork(self, host: str, seq: int, digest: bytes, input_id: int) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO forks VALUES (?, ?, ?, ?)",
            (host, seq, digest, input_id),
        )

    def add_checkpoint(
        self,
        digest: bytes,
        host: str,
        first_seq: int,
        seq: int,
        head: bytes,
        time: int,
        input_id: int,
    ) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
            (digest, host, first_seq, seq, head, time, input_id),
        )

    # -- decisions -----------------------------------------------------------

    def evaluate(self, now: int, leeway: int) -> None:
        """Recompute every status and exception from the evidence held."""
        with self.transaction():
            self.db.execute("DELETE FROM statuses")
            self.db.execute("DELETE FROM exceptions")
            self.db.execute("DELETE FROM cover")
            self._cover()
            self._temp_tables(leeway)
            self._statuses(now, leeway)
            # Releases matched to their issuance, once: the use checks below
            # scan this instead of joining again each time. Only the releases
            # some use check may name are kept: every one while any
            # revocation is held (use-after-revocation), else those out of
            # their validity, on another host, env or task, or of a bundle
            # released more often than allowed (overuse).
            revoked = self.db.execute(
                "SELECT EXISTS (SELECT 1 FROM revocations)"
            ).fetchone()[0]
            self.db.execute("DROP TABLE IF EXISTS temp.rel")
            self.db.execute(
                "CREATE TEMP TABLE rel AS SELECT r.host, r.seq, r.bundle_id, "
                "r.time, r.task, r.input, i.host AS ihost, i.env AS ienv, "
                "i.task AS itask, i.identity, i.issuer, i.issued_at, i.not_before, "
                "i.expires_at, i.max_uses, coalesce(h.env, '') AS henv "
                "FROM receipts r INDEXED BY receipts_use "
                "JOIN issuances i USING (bundle_id) "
                "LEFT JOIN hosts h ON h.name = r.host WHERE r.event = 'release' "
                "AND (:all OR r.time > i.expires_at + :lw "
                "OR r.time < i.not_before - :lw OR r.host != i.host "
                "OR (coalesce(h.env, '') != '' AND h.env != i.env) "
                "OR r.task != i.task OR (SELECT u.releases FROM uses u "
                "WHERE u.bundle_id = r.bundle_id) > i.max_uses)",
                {"all": int(revoked), "lw": leeway},
            )
            for code, sql in _derived():
                self.db.execute(
                    _INSERT_EXCEPTION + sql + ")",
                    {"code": code, "sev": _sev(code), "lw": leeway},
                )
            codes = [
                str(r[0]) for r in self.db.execute("SELECT DISTINCT code FROM findings")
            ]
            for code in codes:
                self.db.execute(
                    "INSERT INTO exceptions (code, severity, host, seq, bundle_id, "
                    "message, input) SELECT code, ?, host, seq, bundle_id, message, "
                    "input FROM findings WHERE code = ?",
                    (_sev(code), code),
                )
            self.db.execute(
                "INSERT INTO exceptions (code, severity, host, seq, bundle_id, "
                "message, input) SELECT 'unaccounted', ?, i.host, 0, i.bundle_id, "
                "'bundle for ' || i.host || ' expired at ' || i.expires_at || "
                "'; the host''s receipts run past that with no trace of it', i.input "
                "FROM statuses s JOIN issuances i USING (bundle_id) "
                "WHERE s.status = 'unaccounted'",
                (_sev("unaccounted"),),
            )

    def _cover(self) -> None:
        """Per host, the time of the newest receipt of its unbroken run from
        seq 1: what happened on the host up to then is fully known."""
        self.db.execute(
            "INSERT INTO cover "
            "SELECT e.host, (SELECT max(time) FROM receipts r "
            "  WHERE r.host = e.host AND r.seq <= e.last) FROM ("
            "  SELECT host, min(seq) AS last FROM receipts r "
            "  WHERE NOT EXISTS (SELECT 1 FROM receipts q "
            "    WHERE q.host = r.host AND q.seq = r.seq + 1) GROUP BY host) e "
            "WHERE EXISTS (SELECT 1 FROM receipts o "
            "WHERE o.host = e.host AND o.seq = 1)"
        )

    def _temp_tables(self, leeway: int) -> None:
        """Scratch tables each computed in one pass, so the checks below do
        not each sort or group a million receipts again: ``uses`` (per
        bundle: releases, denials, newest release) and ``links`` (the
        receipts a chain check may name, with the seq, hash and time of the
        receipt held before each in the host's order). Whatever joins
        receipts to issuances reads the covering index ``receipts_use`` in
        bundle id order, so both sides are walked in key order rather than
        probed at random."""
        self.db.execute("DROP TABLE IF EXISTS temp.uses")
        self.db.execute(
            "CREATE TEMP TABLE uses (bundle_id TEXT PRIMARY KEY, releases INTEGER, "
            "denials INTEGER, last INTEGER) WITHOUT ROWID"
        )
        self.db.execute(
            "INSERT INTO uses SELECT bundle_id, sum(event = 'release'), "
            "sum(event = 'deny'), max(CASE WHEN event = 'release' THEN time "
            "ELSE 0 END) FROM receipts WHERE bundle_id != '' GROUP BY bundle_id"
        )
        # Each receipt probes the one before it by primary key, which is
        # several times faster in SQLite than a window over the table, and
        # only the receipts some chain check may name are kept: those after
        # a gap (with ``ps`` the seq held before them, 0 if none), a first
        # receipt not linked to the genesis, and those whose predecessor is
        # held but whose link or time disagrees with it.
        self.db.execute("DROP TABLE IF EXISTS temp.links")
        self.db.execute(
            "CREATE TEMP TABLE links AS SELECT r.host, r.seq, r.prev, r.time, "
            "r.input, CASE WHEN q.seq IS NULL THEN coalesce((SELECT max(p.seq) "
            "FROM receipts p WHERE p.host = r.host AND p.seq < r.seq), 0) "
            "ELSE q.seq END AS ps, q.hash AS ph, q.time AS pt "
            "FROM receipts r LEFT JOIN receipts q "
            "ON q.host = r.host AND q.seq = r.seq - 1 "
            "WHERE (q.seq IS NULL AND (r.seq > 1 OR r.prev != zeroblob(32))) "
            "OR r.prev != q.hash OR r.time < q.time - :lw",
            {"lw": leeway},
        )

    def _statuses(self, now: int, leeway: int) -> None:
        self.db.execute(
            "INSERT INTO statuses SELECT i.bundle_id, CASE"  # noqa: S608
            " WHEN coalesce(u.releases, 0) > 0 THEN 'used'"
            f" WHEN EXISTS (SELECT 1 FROM revocations v WHERE {_NAMES})"
            "  THEN 'revoked'"
            " WHEN coalesce(u.denials, 0) > 0 THEN 'denied'"
            " WHEN :now > i.expires_at + :lw AND c.until > i.expires_at + :lw"
            "  THEN 'unaccounted'"
            " WHEN :now > i.expires_at + :lw THEN 'expired-unused'"
            " ELSE 'outstanding' END,"
            " coalesce(u.releases, 0), coalesce(u.denials, 0), coalesce(u.last, 0)"
            " FROM issuances i LEFT JOIN uses u USING (bundle_id)"
            " LEFT JOIN cover c ON c.host = i.host ORDER BY i.bundle_id",
            {"now": now, "lw": leeway},
        )

    # -- reading results -----------------------------------------------------

    def status_counts(self) -> dict[str, int]:
        return {
            str(s): int(n)
            for s, n in self.db.execute(
                "SELECT status, count(*) FROM statuses GROUP BY status"
            )
        }

    def exception_counts(self) -> list[tuple[str, int, int]]:
        """(code, severity rank, count), worst first."""
        return [
            (str(c), int(s), int(n))
            for c, s, n in self.db.execute(
                "SELECT code, severity, count(*) FROM exceptions "
                "GROUP BY code ORDER BY severity, count(*) DESC, code"
            )
        ]

    def exceptions(self, limit: int = -1) -> Generator[tuple[Any, ...]]:
        """(code, severity rank, host, seq, bundle id, message, file, input
        sha256), worst first, then by host and seq."""
        for row in self.db.execute(
            "SELECT e.code, e.severity, e.host, e.seq, e.bundle_id, e.message, "
            "coalesce(i.source, ''), coalesce(i.digest, x'') FROM exceptions e "
            "LEFT JOIN inputs i ON i.id = e.input "
            "ORDER BY e.severity, e.code, e.host, e.seq, e.bundle_id, e.message "
            "LIMIT ?",
            (limit,),
        ):
            yield (*row[:7], bytes(row[7]).hex())

    def bundles(self) -> Generator[tuple[Any, ...]]:
        """(bundle id, lseq, host, env, task, identity, owner, not_before,
        expires_at, max_uses, status, uses, denials, last_use) in lseq order."""
        yield from self.db.execute(
            "SELECT i.bundle_id, i.lseq, i.host, i.env, i.task, i.identity, "
            "i.owner, i.not_before, i.expires_at, i.max_uses, s.status, s.uses, "
            "s.denials, s.last_use FROM issuances i JOIN statuses s "
            "USING (bundle_id) ORDER BY i.lseq, i.bundle_id"
        )

    def host_lines(self) -> Iterator[tuple[Any, ...]]:
        """Per host of the ledger or the receipts: (name, env, receipts, lowest
        seq, highest seq, releases, denials, first time, last time, highest
        checkpoint seq, forks)."""
        yield from self.db.execute(
            "SELECT n.name, coalesce(h.env, ''), coalesce(r.n, 0), "
            "coalesce(r.lo, 0), coalesce(r.hi, 0), coalesce(r.rel, 0), "
            "coalesce(r.den, 0), coalesce(r.t0, 0), coalesce(r.t1, 0), "
            "coalesce((SELECT max(seq) FROM checkpoints c WHERE c.host = n.name), 0), "
            "(SELECT count(*) FROM forks f WHERE f.host = n.name) "
            "FROM (SELECT name FROM hosts UNION SELECT DISTINCT host FROM receipts) n "
            "LEFT JOIN hosts h ON h.name = n.name LEFT JOIN (SELECT host, "
            "count(*) AS n, min(seq) AS lo, max(seq) AS hi, "
            "sum(event = 'release') AS rel, sum(event = 'deny') AS den, "
            "min(time) AS t0, max(time) AS t1 FROM receipts GROUP BY host) r "
            "ON r.host = n.name ORDER BY n.name"
        )

    def gaps(self, host: str, limit: int = 50) -> list[tuple[int, int]]:
        return [
            (int(a), int(b))
            for a, b in self.db.execute(
                "SELECT p + 1, seq - 1 FROM (SELECT seq, lag(seq, 1, 0) OVER "
                "(ORDER BY seq) AS p FROM receipts WHERE host = ?) "
                "WHERE seq - p > 1 LIMIT ?",
                (host, limit),
            )
        ]

    def checkpoint_seqs(self, host: str, limit: int = 200) -> list[int]:
        return [
            int(r[0])
            for r in self.db.execute(
                "SELECT DISTINCT seq FROM checkpoints WHERE host = ? ORDER BY seq "
                "LIMIT ?",
                (host, limit),
            )
        ]

    def counts(self) -> dict[str, int]:
        one = self.db.execute
        return {
            "inputs": int(one("SELECT count(*) FROM inputs").fetchone()[0]),
            "ledger_exports": int(one("SELECT count(*) FROM exports").fetchone()[0]),
            "issuances": int(one("SELECT count(*) FROM issuances").fetchone()[0]),
            "hosts": int(one("SELECT count(*) FROM hosts").fetchone()[0]),
            "reporting_hosts": int(
                one("SELECT count(DISTINCT host) FROM receipts").fetchone()[0]
            ),
            "receipts": int(one("SELECT count(*) FROM receipts").fetchone()[0]),
            "checkpoints": int(one("SELECT count(*) FROM checkpoints").fetchone()[0]),
        }

    def get_meta(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def put_meta(self, key: str, value: bytes) -> None:
        try:
            with self.db:
                self.db.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value)
                )
        except sqlite3.Error as exc:
            raise HomeError(f"the audit database cannot be written ({exc})") from None


def _derived() -> list[tuple[str, str]]:
    """(code, SQL giving host, seq, bundle_id, message, input) for every
    exception recomputed from the evidence; ``:lw`` is the leeway. The SQL is
    assembled from constants only, never from input."""
    release = "FROM rel r WHERE 1"
    return [
        (
            "chain-gap",
            "SELECT host, ps + 1, '', 'receipts ' || (ps + 1) || '..' || (seq - 1) "
            "|| ' of host ' || host || ' are missing', input FROM links "
            "WHERE seq - ps > 1",
        ),
        (
            "chain-break",
            "SELECT host, seq, '', 'receipt ' || seq || ' does not link to "
            "receipt ' || (seq - 1), input FROM links "
            "WHERE (seq = 1 AND prev != zeroblob(32)) OR (ps = seq - 1 AND prev != ph)",
        ),
        (
            "chain-fork",
            "SELECT f.host, f.seq, '', 'two different receipts carry seq ' || f.seq, "
            "f.input FROM forks f",
        ),
        (
            "truncated-tail",
            "SELECT c.host, c.seq, '', 'the checkpoint covers receipts ' || "
            "c.first_seq || '..' || c.seq || ' but receipt ' || c.seq || "
            "' was never delivered', c.input FROM checkpoints c LEFT JOIN "
            "receipts r ON r.host = c.host AND r.seq = c.seq WHERE r.seq IS NULL",
        ),
        (
            "checkpoint-mismatch",
            "SELECT c.host, c.seq, '', 'the checkpoint names another receipt ' || "
            "c.seq || ' than the one held', c.input FROM checkpoints c JOIN receipts "
            "r ON r.host = c.host AND r.seq = c.seq WHERE r.hash != c.head",
        ),
        (
            "missing-checkpoint",
            "SELECT r.host, coalesce(c.top, 0) + 1, '', 'receipts ' || "
            "(coalesce(c.top, 0) + 1) || '..' || r.top || ' are covered by no "
            "signed checkpoint', r.input FROM (SELECT host, max(seq) AS top, "
            "max(input) AS input FROM receipts GROUP BY host) r LEFT JOIN "
            "(SELECT host, max(seq) AS top FROM checkpoints GROUP BY host) c "
            "USING (host) WHERE r.top > coalesce(c.top, 0)",
        ),
        (
            "clock-anomaly",
            "SELECT host, seq, bundle_id, 'the host reported ' || reason, input "
            "FROM receipts WHERE reason IN ('clock-behind-floor', 'from-the-future') "
            "UNION ALL SELECT host, seq, '', 'receipt ' || seq || ' is dated ' || "
            "(pt - time) || ' s before receipt ' || (seq - 1), input FROM links "
            "WHERE ps = seq - 1 AND time < pt - :lw",
        ),
        (
            "unknown-host",
            "SELECT '', 0, '', 'a batch signed by a key of no host the ledger "
            "exports enroll (held until one does)', input FROM pending",
        ),
        (
            "unknown-bundle",
            "SELECT r.host, r.seq, r.bundle_id, 'a ' || r.event || ' receipt "
            "names a bundle no ledger export lists', r.input FROM receipts r "
            "WHERE r.bundle_id IN (SELECT bundle_id FROM uses u WHERE NOT EXISTS "
            "(SELECT 1 FROM issuances i WHERE i.bundle_id = u.bundle_id))",
        ),
        (
            "refused-unauthenticated",
            "SELECT host, seq, '', 'the host refused input it could not "
            "authenticate: ' || reason, input FROM receipts "
            "WHERE bundle_id = '' AND event = 'deny'",
        ),
        (
            "use-after-expiry",
            "SELECT r.host, r.seq, r.bundle_id, 'released at ' || r.time || ', '"
            " || (r.time - r.expires_at) || ' s after expiry', r.input "
            f"{release} AND r.time > r.expires_at + :lw",
        ),
        (
            "use-before-valid",
            "SELECT r.host, r.seq, r.bundle_id, 'released at ' || r.time || ', '"
            " || (r.not_before - r.time) || ' s before not-before', r.input "
            f"{release} AND r.time < r.not_before - :lw",
        ),
        (
            "host-mismatch",
            "SELECT r.host, r.seq, r.bundle_id, 'issued for host ' || r.ihost || "
            f"', released on ' || r.host, r.input {release} AND r.host != r.ihost",
        ),
        (
            "env-mismatch",
            "SELECT r.host, r.seq, r.bundle_id, 'issued for env ' || r.ienv || "
            "', released on a host enrolled for ' || r.henv, r.input FROM rel r "
            "WHERE r.henv != '' AND r.henv != r.ienv",
        ),
        (
            "task-mismatch",
            "SELECT r.host, r.seq, r.bundle_id, 'issued for task ' || r.itask || "
            f"', released for ' || r.task, r.input {release} AND r.task != r.itask",
        ),
        (
            "overuse",
            "SELECT host, seq, bundle_id, 'release ' || n || ' of at most ' || "  # noqa: S608
            "max_uses, input FROM (SELECT r.host, r.seq, r.bundle_id, r.input, "
            "r.max_uses, row_number() OVER (PARTITION BY r.bundle_id ORDER BY "
            f"r.time, r.host, r.seq) AS n {release} AND r.bundle_id IN (SELECT "
            "bundle_id FROM uses u JOIN issuances i USING (bundle_id) WHERE "
            "u.releases > i.max_uses)) WHERE n > max_uses",
        ),
        (
            "use-after-revocation",
            "SELECT i.host, i.seq, i.bundle_id, 'released ' || (i.time - "  # noqa: S608
            "min(v.added_at)) || ' s after a revocation naming it was added', "
            "i.input FROM rel i JOIN revocations v ON "
            f"{_NAMES_REL} AND i.time > v.added_at + :lw GROUP BY i.host, i.seq",
        ),
        (
            "ledger-gap",
            "SELECT '', p + 1, '', 'ledger exports ' || (p + 1) || '..' || "
            "(seq - 1) || ' are missing', input FROM (SELECT seq, input, "
            "lag(seq, 1, 0) OVER (ORDER BY seq) AS p FROM exports) WHERE seq - p > 1 "
            "UNION ALL SELECT '', seq, '', 'ledger export ' || seq || ' does not "
            "follow export ' || (seq - 1) || ' (its prev digest or issuance range "
            "differs)', input FROM (SELECT seq, prev, first_lseq, input, "
            "lag(seq) OVER w AS ps, lag(digest) OVER w AS pd, lag(last_lseq) OVER w "
            "AS pl FROM exports WINDOW w AS (ORDER BY seq)) WHERE (seq = 1 AND "
            "(prev != zeroblob(32) OR first_lseq != 1)) OR (ps = seq - 1 AND "
            "(prev != pd OR first_lseq != pl + 1)) "
            "UNION ALL SELECT '', p + 1, '', 'issuances ' || (p + 1) || '..' || "
            "(lseq - 1) || ' of the ledger are missing from its exports', (SELECT "
            "input FROM issuances j WHERE j.lseq = x.lseq) FROM (SELECT lseq, "
            "coalesce((SELECT max(k.lseq) FROM issuances k WHERE k.lseq < y.lseq), "
            "0) AS p FROM (SELECT DISTINCT lseq FROM issuances i WHERE lseq > 1 "
            "AND NOT EXISTS (SELECT 1 FROM issuances j WHERE j.lseq = i.lseq - 1)) "
            "y) x "
            "UNION ALL SELECT '', t.top + 1, '', 'issuances ' || (t.top + 1) || "
            "'..' || e.last || ' of the ledger are missing from its exports', "
            "e.input FROM (SELECT coalesce(max(lseq), 0) AS top FROM issuances) t, "
            "(SELECT max(last_lseq) AS last, max(input) AS input FROM exports) e "
            "WHERE e.last > t.top",
        ),
    ]
