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

from engine.errors import StoreBusy
from engine.store.base import _MESSAGE_COLUMNS, SqlStore, _message
from engine.store.records import (
    ERROR,
    QUEUED,
    RECEIVED,
    DeliveryRow,
    InboundRecord,
    JournalOutcome,
    MessageOutcome,
    StoredMessage,
)

_LOCK_WAIT_SECONDS = 30
_INBOX_COLUMNS = ("channel, transport, peer, sender, control_id, message_type, status, reason, "
                  "received_at, raw, meta, content_hash")


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
        conn.execute(f"PRAGMA busy_timeout={_LOCK_WAIT_SECONDS * 1000}")
        conn.execute("PRAGMA foreign_keys=OFF")
        if self.fsync:
            # The journal writer must not pay for copying the WAL into the database (and
            # fsyncing it) inside a commit that senders wait on: checkpoint() does that,
            # from upkeep, and the processor's (non-fsync) connection checkpoints itself.
            conn.execute("PRAGMA wal_autocheckpoint=0")
        return _AutoBegin(conn, self)  # type: ignore[return-value]

    def checkpoint(self) -> None:
        """Copy the WAL into the database without blocking readers or writers."""
        self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _sql(self, sql: str) -> str:
        return sql

    def journal(self, records: Sequence[InboundRecord]) -> list[JournalOutcome]:
        """SqlStore.journal's contract, written to the inbox: one duplicate lookup per
        sender in messages and in the inbox, then one executemany. The inbox has a single
        small index, so this fsynced commit (the one every ACK waits on) writes a few pages;
        promote_inbox later moves the rows, ids unchanged, into the indexed messages table."""
        now = time.time()
        wanted: dict[tuple[str, str, float], set[str]] = defaultdict(set)
        for rec in records:
            if rec.checks_duplicates:  # so control_id is set
                wanted[(rec.channel, rec.sender, rec.duplicate_window_seconds)].add(
                    rec.control_id or "")
        out: list[JournalOutcome | None] = [None] * len(records)
        with self.transaction() as cur:
            originals: dict[tuple[str, str, str, str | None], tuple[int, str]] = {}
            for (channel, sender, window), control_ids in wanted.items():
                ids = sorted(control_ids)
                marks = ",".join("?" * len(ids))
                rows = cur.execute(
                    "SELECT id, status, control_id, content_hash FROM messages WHERE "
                    f"channel = ? AND sender = ? AND control_id IN ({marks})"
                    " AND +received_at >= ? AND status <> ? UNION ALL "
                    "SELECT id, status, control_id, content_hash FROM inbox WHERE "
                    f"channel = ? AND sender = ? AND control_id IN ({marks}) AND status <> ?",
                    (channel, sender, *ids, now - window, ERROR,
                     channel, sender, *ids, ERROR)).fetchall()
                for message_id, status, control_id, digest in sorted(rows):  # first counts
                    originals.setdefault((channel, sender, control_id, digest),
                                         (message_id, status))
            digests = [r.content_hash() for r in records]
            inserts: list[int] = []
            first_in_batch: dict[tuple[str, str, str, str | None], int] = {}
            later: list[tuple[int, int]] = []  # (record index, index of its first copy)
            for i, rec in enumerate(records):
                if rec.checks_duplicates:
                    key = (rec.channel, rec.sender, rec.control_id or "", digests[i])
                    if key in originals:
                        out[i] = JournalOutcome(originals[key][0], True, originals[key][1])
                        continue
                    if key in first_in_batch:
                        later.append((i, first_in_batch[key]))
                        continue
                    first_in_batch[key] = i
                inserts.append(i)
            if inserts:
                first = _next_message_id(cur)
                cur.executemany(
                    f"INSERT INTO inbox (id, {_INBOX_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(first + offset, r.channel, r.transport, r.peer, r.sender, r.control_id,
                      r.message_type, r.status, r.reason, now, r.raw,
                      json.dumps(r.meta) if r.meta else "{}",
                      digests[i])
                     for offset, i in enumerate(inserts) for r in (records[i],)])
                for offset, i in enumerate(inserts):
                    out[i] = JournalOutcome(first + offset, False, records[i].status)
            for i, original in later:
                done = out[original]
                assert done is not None
                out[i] = JournalOutcome(done.message_id, True, done.status)
        return [o for o in out if o is not None]

    def journal_nowait(self, records: Sequence[InboundRecord]) -> list[JournalOutcome] | None:
        conn = self._conn()
        conn.nowait = True
        try:
            return self.journal(records)
        except StoreBusy:
            return None
        finally:
            conn.nowait = False

    def promote_inbox(self, limit: int | None = None) -> int:
        """Move journaled messages (the oldest `limit`, or all) from the inbox into
        messages, same ids, with their RECEIVED events, in one transaction without an fsync
        of its own: the rows are already durable in the inbox, and the WAL keeps commits in
        order, so a crash leaves each row either promoted or still in the inbox. Returns
        the rows moved."""
        conn = self._conn()
        if self.fsync:
            conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with self.transaction() as cur:
                upto = cur.execute(  # LIMIT -1: no limit
                    "SELECT MAX(id) FROM (SELECT id FROM inbox ORDER BY id LIMIT ?)",
                    (-1 if limit is None else limit,)).fetchone()[0]
                if upto is None:
                    return 0
                moved = cur.execute(
                    f"INSERT INTO messages (id, {_INBOX_COLUMNS}, updated_at) "
                    f"SELECT id, {_INBOX_COLUMNS}, received_at FROM inbox WHERE id <= ? "
                    "ORDER BY id", (upto,)).rowcount
                cur.execute("INSERT INTO events (at, entity, entity_id, status, reason) "
                            "SELECT received_at, 'message', CAST(id AS TEXT), status, reason "
                            "FROM inbox WHERE id <= ? ORDER BY id", (upto,))
                cur.execute("DELETE FROM inbox WHERE id <= ?", (upto,))
                return int(moved)
        finally:
            if self.fsync:
                conn.execute("PRAGMA synchronous=FULL")

    def migrate(self) -> list[int]:
        """Apply migrations, then promote what a previous run journaled but had not yet
        moved out of the inbox."""
        applied = super().migrate()
        self.promote_inbox()
        return applied

    def complete_messages(self, outcomes: Sequence[MessageOutcome],
                          owner: str | None = None) -> list[bool]:
        """A leased message was promoted by its claim; one completed without a lease (say,
        straight after its journal) may still be in the inbox."""
        if owner is None:
            self.settle()
        return super().complete_messages(outcomes, owner)

    def settle(self) -> None:
        """Promote the inbox if anything is waiting in it (a cheap read when it is empty,
        as it is within milliseconds of a lull)."""
        if self._query("SELECT EXISTS (SELECT 1 FROM inbox)")[0][0]:
            self.promote_inbox()

    def optimize(self) -> None:
        """A bounded ANALYZE (each index sampled, milliseconds even on millions of rows):
        without statistics SQLite may pick the channel index for an MRN + channel search
        and read a whole channel."""
        conn = self._conn()
        conn.execute("PRAGMA analysis_limit=400")
        conn.execute("ANALYZE")

    def claim_messages(self, owner: str, limit: int, lease_seconds: float) -> list[StoredMessage]:
        """Messages still in the inbox are promoted first when the backlog in messages is
        shorter than `limit`, so processing never waits on the journal writer's promotion
        (nor on a writer that crashed before it)."""
        claimed = self._claim(owner, limit, lease_seconds)
        if len(claimed) < limit and self.promote_inbox(limit):
            claimed += self._claim(owner, limit - len(claimed), lease_seconds)
        return claimed

    def _claim(self, owner: str, limit: int, lease_seconds: float) -> list[StoredMessage]:
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


def _next_message_id(cur: sqlite3.Cursor) -> int:
    """The next message id: above every id in the inbox and every id messages ever used
    (AUTOINCREMENT's sqlite_sequence remembers deleted ones), so ids are never reused."""
    row = cur.execute(
        "SELECT MAX(COALESCE((SELECT MAX(id) FROM inbox), 0), COALESCE((SELECT seq FROM "
        "sqlite_sequence WHERE name = 'messages'), 0), COALESCE((SELECT MAX(id) FROM "
        "messages), 0))").fetchone()
    return int(row[0]) + 1


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

    def __init__(self, conn: sqlite3.Connection, store: SqliteStore) -> None:
        self._conn = conn
        self._store = store
        self._timeout_ms = _LOCK_WAIT_SECONDS * 1000  # as _connect set it
        self._open = False
        # Set for one transaction by SqlStore.transaction(read_only=True): a deferred BEGIN
        # reads a WAL snapshot without waiting for (or blocking) writers.
        self.deferred_begin = False
        # Set by journal_nowait: raise StoreBusy instead of waiting for the write lock.
        self.nowait = False

    def cursor(self) -> sqlite3.Cursor:
        if not self._open:
            if self.deferred_begin:
                self._busy_timeout(_LOCK_WAIT_SECONDS * 1000)
                self._conn.execute("BEGIN")
            else:
                self._begin_immediate()
            self._open = True
        return self._conn.cursor()

    def _begin_immediate(self) -> None:
        """Take the write lock. SQLite's own busy handler sleeps 1, 2, 5, 10... ms between
        tries, far longer than a journal commit holds the lock. The journal's store (every
        ACK waits on it: `journal_priority`) polls from 50 us, doubling to 1 ms, instead,
        so it wins the lock from a waiting processor; `nowait` raises StoreBusy at once."""
        conn = self._conn
        polling = self._store.journal_priority or self.nowait
        # The handler is switched off only while polling, and left so for the next
        # transaction on this connection (one statement saved per commit on the hot path).
        self._busy_timeout(0 if polling else _LOCK_WAIT_SECONDS * 1000)
        if not polling:
            conn.execute("BEGIN IMMEDIATE")
            return
        delay, deadline = 0.00005, time.monotonic() + _LOCK_WAIT_SECONDS
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                if self.nowait:
                    raise StoreBusy("the store's write lock is held") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.001)

    def _busy_timeout(self, ms: int) -> None:
        if self._timeout_ms != ms:
            self._conn.execute(f"PRAGMA busy_timeout={ms}")
            self._timeout_ms = ms

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


