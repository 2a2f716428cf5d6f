"""The PostgreSQL backend: the production store, shared by several engine nodes.

One connection per thread (psycopg 3), durable commits (synchronous_commit on unless the
config turns fsync off), row claiming with FOR UPDATE SKIP LOCKED under leases, control
numbers from database sequences, advisory locks for migrations, duplicate checks and
837P batch assembly. A lease is void when its lease time has passed or when its owner
stopped heartbeating (the node died), so another node picks the work up within seconds.

Raw content lives in daily partitions of `message_content` (engine/store/partitions.py),
so retention drops whole days; messages.raw is '' while the content is there. Reads
(get_message, search_messages, claim_messages) fetch it in the same transaction.

The URL is a libpq URL; ChargeBridge reads (and strips) one extra query parameter,
`schema`, which selects (and creates) the schema the tables live in. libpq's own
`options=-csearch_path%3D<schema>` works as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import structlog
from psycopg import sql

from engine.cluster import heartbeat
from engine.errors import StoreError
from engine.store import migrations, partitions
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

log = structlog.get_logger("chargebridge.store")

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# A lease stays valid only while its owner beats: the owner wrote its node row within
# this many seconds (see _LeaseKeeper). Kept well above the beat interval so a busy,
# living node is never mistaken for a dead one.
_LIVE_OWNER = ("EXISTS (SELECT 1 FROM nodes n WHERE n.last_seen >= %s AND "
               "n.name || CASE WHEN n.role = '' THEN '' ELSE ':' || n.role END = {t}.lease_owner)")


def split_url(url: str) -> tuple[str, str | None]:
    """(libpq conninfo URL without `schema`, the schema it named or None)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    kept = []
    for key, value in query:
        if key == "schema":
            schema = value or None
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), schema


def to_pyformat(statement: str) -> str:
    """Portable SQL (`?` placeholders) to psycopg's `%s`; a literal `%` becomes `%%`.

    `?` inside a quoted string is left alone; psycopg reads `%` everywhere, so it is
    doubled inside literals too.
    """
    out: list[str] = []
    quote: str | None = None
    for ch in statement:
        if ch == "%":
            out.append("%%")
            continue
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            out.append("%s")
            continue
        out.append(ch)
    return "".join(out)


def split_owner(owner: str) -> tuple[str, str]:
    """A lease owner `node:role` as (node, role); an owner without a colon has role ''."""
    node, sep, role = owner.rpartition(":")
    return (node, role) if sep else (owner, "")


class PostgresStore(SqlStore):
    """PostgreSQL store. Several processes and nodes may share one database (schema)."""

    tokens = {"id": "BIGSERIAL PRIMARY KEY", "text": "TEXT", "blob": "BYTEA",
              "float": "DOUBLE PRECISION"}

    def __init__(self, url: str, *, schema: str | None = None, fsync: bool = True,
                 beat_seconds: float = 2.0, owner_stale_seconds: float = 20.0,
                 connect_timeout: int = 10) -> None:
        super().__init__()
        self.conninfo, url_schema = split_url(url)
        self.schema = schema or url_schema
        if self.schema is not None and not _SCHEMA_NAME.match(self.schema):
            raise StoreError(f"store.url schema {self.schema!r} must be a plain SQL "
                             "identifier (letters, digits, underscore)")
        self.fsync = fsync
        self.beat_seconds = beat_seconds
        self.owner_stale_seconds = owner_stale_seconds
        self.connect_timeout = connect_timeout
        self._sql_cache: dict[str, str] = {}
        self._sequences: set[str] = set()
        self._namespace: str | None = None
        # Day partitions this process has seen exist, and partitions retention found
        # blocked for a given set of expired channels (see engine/store/partitions.py).
        self._known_partitions: set[int] = set()
        self._blocked_partitions: dict[str, tuple[str, ...]] = {}
        self._keeper = _LeaseKeeper(self)

    # -- backend hooks ---------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.conninfo, autocommit=False,
                                   connect_timeout=self.connect_timeout,
                                   application_name="chargebridge")
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot connect to the PostgreSQL store: {exc}") from exc
        if self.schema is not None:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        if not self.fsync:
            conn.execute("SET synchronous_commit TO off")
        elif conn.execute("SHOW synchronous_commit").fetchone() in (("off",), ("local",)):
            # The promise behind an ACK: the commit is flushed before we answer.
            conn.execute("SET synchronous_commit TO on")
        if self._namespace is None:
            row = conn.execute("SELECT current_database(), current_schema()").fetchone()
            assert row is not None  # a SELECT without FROM returns one row
            self._namespace = f"{row[0]}.{self.schema or row[1]}"
        conn.commit()
        return conn

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or conn.broken):
            self._local.conn = None  # the server went away: reconnect on this thread
        return super()._conn()

    def _sql(self, statement: str) -> str:
        translated = self._sql_cache.get(statement)
        if translated is None:
            translated = to_pyformat(statement)
            self._sql_cache[statement] = translated
        return translated

    def _key(self, purpose: str, name: str) -> int:
        """A signed 64-bit advisory-lock key, private to this database and schema
        (the namespace is read when the first connection opens)."""
        self._conn()
        digest = hashlib.blake2b(f"chargebridge\x1f{self._namespace}\x1f{purpose}\x1f{name}"
                                 .encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def _lock_keys(self, cur: Any, keys: Sequence[str]) -> None:
        if keys:
            ints = sorted({self._key("key", k) for k in keys})  # one order on every node
            cur.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k",
                        (ints,))

    # -- schema ------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply pending migrations in ONE transaction under an advisory lock, so nodes
        starting at the same moment apply each migration exactly once; then the
        PostgreSQL-only tables (idempotent, not numbered: see engine/store/migrations.py)."""
        applied: list[int] = []
        with self.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._key("migrate", ""),))
            if self.schema is not None:
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}")
                            .format(sql.Identifier(self.schema)))
            cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
                        "PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION "
                        "NOT NULL)")
            done = {r[0] for r in cur.execute("SELECT version FROM schema_migrations")}
            for migration in migrations.available():
                if migration.version in done:
                    continue
                for statement in migration.statements(self.tokens):
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                            (migration.version, migration.name, time.time()))
                applied.append(migration.version)
            for statement in partitions.SCHEMA:
                cur.execute(statement)
        return applied

    def ensure_content_partition(self, start: int, lock_timeout: str | None = None) -> bool:
        """Create the message_content partition of the day beginning at `start` (UTC
        epoch seconds) unless it exists; True when this call created it. Nodes doing it
        at the same moment are serialized by an advisory lock. `lock_timeout` (e.g.
        '2s') gives up instead of queueing ingest behind a busy table."""
        with self.transaction() as cur:
            if lock_timeout is not None:
                cur.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout,))
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._key("partition", ""),))
            created = partitions.create_partition(cur, start)
        self._known_partitions.add(start)
        return created

    def _ensure_day(self, at: float) -> None:
        start = partitions.day_start(at)
        if start not in self._known_partitions:
            self.ensure_content_partition(start)

    # -- ingest ------------------------------------------------------------------------
    def journal(self, records: Sequence[InboundRecord]) -> list[JournalOutcome]:
        """SqlStore.journal's contract in a fixed number of round trips per group (not
        three per record): one duplicate lookup for the group, ids drawn from the
        sequence in arrival order, pipelined inserts; one transaction, one flush.
        The raw bytes go to today's message_content partition (created when missing)."""
        now = time.time()
        self._ensure_day(now)
        try:
            return self._journal(records, now)
        except psycopg.errors.CheckViolation as exc:
            if "no partition" not in str(exc):
                raise
            # Today's partition went away since this process saw it: make it, once more.
            self._known_partitions.discard(partitions.day_start(now))
            self._ensure_day(now)
            return self._journal(records, now)

    def _journal(self, records: Sequence[InboundRecord], now: float) -> list[JournalOutcome]:
        # Per record: an outcome, or the index of the record in this group it repeats.
        decided: list[JournalOutcome | int] = []
        with self.transaction() as cur:
            dedupe = [r.checks_duplicates for r in records]
            self._lock_keys(cur, sorted({f"dedupe:{r.channel}:{r.sender}:{r.control_id}"
                                         for r, d in zip(records, dedupe, strict=True) if d}))
            digests = [r.content_hash() for r in records]
            originals = self._originals(cur, [(r.channel, r.sender, r.control_id or "",
                                               now - r.duplicate_window_seconds, h)
                                              for r, d, h in zip(records, dedupe, digests,
                                                                 strict=True) if d])
            batch_seen: dict[tuple[str, str, str, str], int] = {}
            inserting: list[int] = []
            for i, (rec, check) in enumerate(zip(records, dedupe, strict=True)):
                key = (rec.channel, rec.sender, rec.control_id or "", digests[i])
                if check:
                    if key in batch_seen:
                        decided.append(batch_seen[key])
                        continue
                    found = originals.get((*key[:3], now - rec.duplicate_window_seconds,
                                           digests[i]))
                    if found is not None:
                        decided.append(JournalOutcome(found[0], True, found[1]))
                        continue
                if rec.control_id and rec.status != ERROR:
                    batch_seen[key] = i
                decided.append(i)
                inserting.append(i)
            ids = self._message_ids(cur, len(inserting))
            by_index = dict(zip(inserting, ids, strict=True))
            if inserting:
                cur.executemany(
                    "INSERT INTO messages (id, channel, transport, peer, sender, control_id, "
                    "message_type, status, reason, received_at, updated_at, raw, meta, "
                    "content_hash) VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [(by_index[i], r.channel, r.transport, r.peer, r.sender, r.control_id,
                      r.message_type, r.status, r.reason, now, now, b"", json.dumps(r.meta),
                      digests[i])
                     for i in inserting for r in (records[i],)])
                cur.executemany("INSERT INTO message_content (message_id, received_at, "
                                "channel, raw) VALUES (%s, %s, %s, %s)",
                                [(by_index[i], now, records[i].channel, records[i].raw)
                                 for i in inserting])
                cur.executemany("INSERT INTO events (at, entity, entity_id, status, reason) "
                                "VALUES (%s, 'message', %s, %s, %s)",
                                [(now, str(by_index[i]), records[i].status, records[i].reason)
                                 for i in inserting])
        out = []
        for i, item in enumerate(decided):
            if isinstance(item, JournalOutcome):
                out.append(item)
            elif item == i:
                out.append(JournalOutcome(by_index[i], False, records[i].status))
            else:  # a repeat, inside this group, of record `item`
                out.append(JournalOutcome(by_index[item], True, records[item].status))
        return out

    def _originals(self, cur: Any, keys: list[tuple[str, str, str, float, str]]
                   ) -> dict[tuple[str, str, str, float, str], tuple[int, str]]:
        """For each (channel, sender, control id, since, content hash): the first message
        with those bytes journaled since then that is not in ERROR, as (id, status)."""
        if not keys:
            return {}
        channels, senders, controls, since, hashes = (list(col)
                                                      for col in zip(*keys, strict=True))
        rows = cur.execute(
            "SELECT DISTINCT ON (k.channel, k.sender, k.control_id, k.since, k.digest) "
            "k.channel, k.sender, k.control_id, k.since, k.digest, m.id, m.status FROM "
            "unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::text[]) AS "
            "k(channel, sender, control_id, since, digest) "
            "JOIN messages m ON m.channel = k.channel AND m.sender = k.sender AND "
            "m.control_id = k.control_id AND m.received_at >= k.since AND m.status <> %s "
            "AND m.content_hash = k.digest "
            "ORDER BY k.channel, k.sender, k.control_id, k.since, k.digest, m.id",
            (channels, senders, controls, since, hashes, ERROR)).fetchall()
        return {(r[0], r[1], r[2], r[3], r[4]): (int(r[5]), r[6]) for r in rows}

    def _message_ids(self, cur: Any, count: int) -> list[int]:
        """`count` new message ids, ascending, so ids keep arrival order."""
        if count == 0:
            return []
        rows = cur.execute("SELECT nextval(pg_get_serial_sequence('messages', 'id')) "
                           "FROM generate_series(1, %s)", (count,)).fetchall()
        return sorted(int(r[0]) for r in rows)

    # -- reads -------------------------------------------------------------------------
    def _with_content(self, cur: Any, messages: list[StoredMessage]) -> list[StoredMessage]:
        """The messages with their raw bytes read from message_content (or, for content
        retention kept from a dropped day, message_content_kept)."""
        wanted = [m for m in messages if not m.raw]
        if not wanted:
            return messages
        ids = [m.id for m in wanted]
        rows = cur.execute(
            # received_at = ANY(...) lets PostgreSQL visit only the partitions of those days.
            "SELECT message_id, raw FROM message_content WHERE received_at = ANY(%s) "
            "AND message_id = ANY(%s) UNION ALL SELECT message_id, raw "
            "FROM message_content_kept WHERE message_id = ANY(%s)",
            ([m.received_at for m in wanted], ids, ids)).fetchall()
        found = {int(r[0]): bytes(r[1]) for r in rows if r[1] is not None}
        return [replace(m, raw=found[m.id]) if m.id in found else m for m in messages]

    def get_message(self, message_id: int) -> StoredMessage | None:
        with self.transaction() as cur:
            row = cur.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = %s",
                              (message_id,)).fetchone()
            return None if row is None else self._with_content(cur, [_message(row)])[0]

    def search_messages(self, *, channel: str | None = None, status: str | None = None,
                        control_id: str | None = None, message_type: str | None = None,
                        mrn: str | None = None, since: float | None = None,
                        until: float | None = None, before_id: int | None = None,
                        limit: int = 50) -> list[StoredMessage]:
        found = super().search_messages(channel=channel, status=status,
                                        control_id=control_id, message_type=message_type,
                                        mrn=mrn, since=since, until=until,
                                        before_id=before_id, limit=limit)
        with self.transaction() as cur:
            return self._with_content(cur, found)

    # -- claiming ----------------------------------------------------------------------
    def claim_messages(self, owner: str, limit: int, lease_seconds: float) -> list[StoredMessage]:
        self._keeper.track(owner)
        now = time.time()
        with self.transaction() as cur:
            rows = cur.execute(
                "WITH picked AS MATERIALIZED (SELECT m.id FROM messages m WHERE m.status = %s "
                "AND (m.lease_until IS NULL OR m.lease_until < %s OR NOT "
                + _LIVE_OWNER.format(t="m") + ") ORDER BY m.id LIMIT %s "
                "FOR UPDATE SKIP LOCKED) "
                "UPDATE messages SET lease_owner = %s, lease_until = %s, "
                "attempts = attempts + 1 WHERE id IN (SELECT id FROM picked) "
                f"RETURNING {_MESSAGE_COLUMNS}",
                (RECEIVED, now, now - self.owner_stale_seconds, limit, owner,
                 now + lease_seconds)).fetchall()
            return self._with_content(cur, [_message(r) for r in sorted(rows,
                                                                        key=lambda r: r[0])])

    def claim_deliveries(self, destination: str, owner: str, limit: int,
                         lease_seconds: float) -> list[DeliveryRow]:
        self._keeper.track(owner)
        now = time.time()
        with self.transaction() as cur:
            ids = [r[0] for r in cur.execute(
                "WITH picked AS MATERIALIZED (SELECT d.id FROM deliveries d "
                "WHERE d.destination = %s AND d.status = %s AND d.next_attempt_at <= %s AND "
                "(d.lease_until IS NULL OR d.lease_until < %s OR NOT "
                + _LIVE_OWNER.format(t="d") + ") ORDER BY d.id LIMIT %s "
                "FOR UPDATE SKIP LOCKED) "
                "UPDATE deliveries SET lease_owner = %s, lease_until = %s "
                "WHERE id IN (SELECT id FROM picked) RETURNING id",
                (destination, QUEUED, now, now, now - self.owner_stale_seconds, limit,
                 owner, now + lease_seconds)).fetchall()]
            if not ids:
                return []
            rows = cur.execute(to_pyformat(self._DELIVERY_SELECT)
                               + " WHERE d.id = ANY(%s) ORDER BY d.id", (ids,)).fetchall()
        return self._delivery_rows(rows)

    def next_counter(self, name: str) -> int:
        """nextval of a per-name sequence: unique forever, across every node."""
        seq = _sequence_name(name)
        with self.transaction() as cur:
            if seq not in self._sequences:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._key("sequence", name),))
                exists = cur.execute("SELECT to_regclass(%s)", (seq,)).fetchone()[0]
                if exists is None:
                    cur.execute(sql.SQL("CREATE SEQUENCE {} AS BIGINT")
                                .format(sql.Identifier(seq)))
                    # Carry on from a counter kept in the counters table (data moved
                    # over from an older store), never below it.
                    row = cur.execute("SELECT value FROM counters WHERE name = %s",
                                      (name,)).fetchone()
                    if row is not None and row[0] > 0:
                        cur.execute("SELECT setval(%s, %s)", (seq, row[0]))
            value = cur.execute("SELECT nextval(%s)", (seq,)).fetchone()[0]
        self._sequences.add(seq)
        return int(value)

    @contextmanager
    def batch_lock(self, destination: str) -> Iterator[bool]:
        """A session advisory lock per destination: one node assembles its batch at a
        time. A node that dies loses its session, and with it the lock."""
        key = self._key("batch", destination)
        with self.transaction() as cur:
            held = bool(cur.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0])
        try:
            yield held
        finally:
            if held:
                # A lost connection released the lock with its session already.
                with suppress(psycopg.Error), self.transaction() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (key,))

    # -- lifecycle ---------------------------------------------------------------------
    def dispose(self) -> None:
        """Stop the heartbeat thread and close this thread's connection."""
        self._keeper.stop()
        self.close()


def _sequence_name(counter: str) -> str:
    """A safe, unique sequence name for a counter (names may hold any characters)."""
    readable = re.sub(r"[^a-z0-9_]", "_", counter.lower())[:32]
    digest = hashlib.blake2b(counter.encode(), digest_size=5).hexdigest()
    return f"cb_counter_{readable}_{digest}"


class _LeaseKeeper:
    """Keeps the node rows of every lease owner in this process beating.

    The first claim by an owner writes its row at once; a daemon thread rewrites it every
    `beat_seconds`. A SIGKILLed process stops beating, so its leases become claimable once
    its row is `owner_stale_seconds` old, long before their lease time runs out.
    """

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.owners: set[str] = set()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def track(self, owner: str) -> None:
        if owner in self.owners:
            return
        with self.lock:
            if owner in self.owners:
                return
            self._beat(owner)
            self.owners.add(owner)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="lease-keeper",
                                               daemon=True)
                self.thread.start()

    def _beat(self, owner: str) -> None:
        node, role = split_owner(owner)
        heartbeat(self.store, node, role, pid=os.getpid())

    def _run(self) -> None:
        while not self.stopping.wait(self.store.beat_seconds):
            for owner in sorted(self.owners):
                try:
                    self._beat(owner)
                except Exception as exc:  # the database is away: keep trying
                    log.warning("store.heartbeat_failed", error=type(exc).__name__)
        self.store.close()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
