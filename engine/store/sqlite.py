"""The embedded SQLite backend: WAL, synchronous=FULL (fsync on every commit), one
connection per thread, and row claiming under BEGIN IMMEDIATE."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.store.base import _MESSAGE_COLUMNS, SqlStore, _message
from engine.store.records import (
    ERROR,
    QUEUED,
    RECEIVED,
    DeliveryRow,
    InboundRecord,
    JournalOutcome,
    StoredMessage,
)


class SqliteStore(SqlStore):
    """SQLite store; `path` ':memory:' is not supported (processes share the file)."""

    tokens = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "text": "TEXT", "blob": "BLOB",
              "float": "REAL"}

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                               check_same_thread=False)
        _enable_wal(conn)
        conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=OFF")
        if self.fsync:
            # The journal writer must not pay for copying the WAL into the database (and
            # fsyncing it) inside a commit that senders wait on: checkpoint() does that,
            # from upkeep, and the processor's (non-fsync) connection checkpoints itself.
            conn.execute("PRAGMA wal_autocheckpoint=0")
        return _AutoBegin(conn)  # type: ignore[return-value]

    def checkpoint(self) -> None:
        """Copy the WAL into the database without blocking readers or writers."""
        self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _sql(self, sql: str) -> str:
        return sql

    def journal(self, records: Sequence[InboundRecord]) -> list[JournalOutcome]:
        """SqlStore.journal's contract, in a handful of statements per group: one duplicate
        lookup per sender, then the messages and their events with executemany. (The
        group commit runs this on every ACK's path.)"""
        now = time.time()
        wanted: dict[tuple[str, str, float], set[str]] = defaultdict(set)
        for rec in records:
            if rec.control_id and rec.status != ERROR and rec.duplicate_window_seconds > 0:
                wanted[(rec.channel, rec.sender, rec.duplicate_window_seconds)].add(
                    rec.control_id)
        out: list[JournalOutcome | None] = [None] * len(records)
        with self.transaction() as cur:
            originals: dict[tuple[str, str, str, str | None], tuple[int, str]] = {}
            for (channel, sender, window), control_ids in wanted.items():
                ids = sorted(control_ids)
                rows = cur.execute(
                    "SELECT id, status, control_id, content_hash FROM messages WHERE "
                    f"channel = ? AND sender = ? AND control_id IN ({','.join('?' * len(ids))})"
                    " AND +received_at >= ? AND status <> ?",
                    (channel, sender, *ids, now - window, ERROR)).fetchall()
                for message_id, status, control_id, digest in sorted(rows):  # first counts
                    originals.setdefault((channel, sender, control_id, digest),
                                         (message_id, status))
            digests = [r.content_hash() for r in records]
            inserts: list[int] = []
            first_in_batch: dict[tuple[str, str, str, str | None], int] = {}
            later: list[tuple[int, int]] = []  # (record index, index of its first copy)
            for i, rec in enumerate(records):
                if rec.control_id and rec.status != ERROR and rec.duplicate_window_seconds > 0:
                    key = (rec.channel, rec.sender, rec.control_id, digests[i])
                    if key in originals:
                        out[i] = JournalOutcome(originals[key][0], True, originals[key][1])
                        continue
                    if key in first_in_batch:
                        later.append((i, first_in_batch[key]))
                        continue
                    first_in_batch[key] = i
                inserts.append(i)
            if inserts:
                cur.executemany(
                    "INSERT INTO messages (channel, transport, peer, sender, control_id, "
                    "message_type, status, reason, received_at, updated_at, raw, meta, "
                    "content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(r.channel, r.transport, r.peer, r.sender, r.control_id,
                      r.message_type, r.status, r.reason, now, now, r.raw, json.dumps(r.meta),
                      digests[i])
                     for i in inserts for r in (records[i],)])
                # One writer inside BEGIN IMMEDIATE: AUTOINCREMENT ids are consecutive.
                last = int(cur.execute("SELECT last_insert_rowid()").fetchone()[0])
                first = last - len(inserts) + 1
                for offset, i in enumerate(inserts):
                    out[i] = JournalOutcome(first + offset, False, records[i].status)
                cur.executemany(
                    "INSERT INTO events (at, entity, entity_id, status, reason) "
                    "VALUES (?, 'message', ?, ?, ?)",
                    [(now, str(first + offset), records[i].status, records[i].reason)
                     for offset, i in enumerate(inserts)])
            for i, original in later:
                done = out[original]
                assert done is not None
                out[i] = JournalOutcome(done.message_id, True, done.status)
        return [o for o in out if o is not None]

    def optimize(self) -> None:
        """A bounded ANALYZE (each index sampled, milliseconds even on millions of rows):
        without statistics SQLite may pick the channel index for an MRN + channel search
        and read a whole channel."""
        conn = self._conn()
        conn.execute("PRAGMA analysis_limit=400")
        conn.execute("ANALYZE")

    def claim_messages(self, owner: str, limit: int, lease_seconds: float) -> list[StoredMessage]:
        now = time.time()
        with self.transaction() as cur:
            rows = cur.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE status = ? AND "
                "(lease_until IS NULL OR lease_until < ?) ORDER BY id LIMIT ?",
                (RECEIVED, now, limit)).fetchall()
            if rows:
                cur.executemany("UPDATE messages SET lease_owner = ?, lease_until = ?, "
                                "attempts = attempts + 1 WHERE id = ?",
                                [(owner, now + lease_seconds, r[0]) for r in rows])
        return [_message(r) for r in rows]

    def claim_deliveries(self, destination: str, owner: str, limit: int,
                         lease_seconds: float) -> list[DeliveryRow]:
        now = time.time()
        with self.transaction() as cur:
            rows = cur.execute(
                self._DELIVERY_SELECT + " WHERE d.destination = ? AND d.status = ? AND "
                "d.next_attempt_at <= ? AND (d.lease_until IS NULL OR d.lease_until < ?) "
                "ORDER BY d.id LIMIT ?", (destination, QUEUED, now, now, limit)).fetchall()
            if rows:
                cur.executemany("UPDATE deliveries SET lease_owner = ?, lease_until = ? "
                                "WHERE id = ?", [(owner, now + lease_seconds, r[0]) for r in rows])
        return self._delivery_rows(rows)

    def next_counter(self, name: str) -> int:
        with self.transaction() as cur:
            cur.execute("INSERT INTO counters (name, value) VALUES (?, 1) "
                        "ON CONFLICT (name) DO UPDATE SET value = value + 1", (name,))
            return int(cur.execute("SELECT value FROM counters WHERE name = ?",
                                   (name,)).fetchone()[0])


def _enable_wal(conn: sqlite3.Connection, timeout: float = 30.0) -> None:
    """Switch to WAL. Changing the journal mode needs an exclusive lock and SQLite answers
    "database is locked" at once (no busy wait) while another process creates the same
    file, so retry for a while."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class _AutoBegin:
    """Wraps a connection in autocommit mode so each transaction() starts with
    BEGIN IMMEDIATE: the write lock is taken up front, so two processes never
    deadlock upgrading a read transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._open = False
        # Set for one transaction by SqlStore.transaction(read_only=True): a deferred BEGIN
        # reads a WAL snapshot without waiting for (or blocking) writers.
        self.deferred_begin = False

    def cursor(self) -> sqlite3.Cursor:
        if not self._open:
            self._conn.execute("BEGIN" if self.deferred_begin else "BEGIN IMMEDIATE")
            self._open = True
        return self._conn.cursor()

    def commit(self) -> None:
        if self._open:
            self._conn.execute("COMMIT")
            self._open = False
        self.deferred_begin = False

    def rollback(self) -> None:
        if self._open:
            self._conn.execute("ROLLBACK")
            self._open = False
        self.deferred_begin = False

    def close(self) -> None:
        self._conn.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


