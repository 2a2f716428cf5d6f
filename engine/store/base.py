"""The store interface: everything the pipeline and the operators need, backend-agnostic.

SqlStore implements it once in portable SQL (`?` placeholders, ON CONFLICT upserts);
a backend supplies connections, type tokens, row claiming and durable counters.
Transaction boundaries are named on each method: recovery relies on them.
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from engine.charge import Charge, Finding
from engine.store import migrations
from engine.store.records import (
    CANCEL_PREFIX,
    ERROR,
    FAILED,
    HELD,
    QUEUED,
    SENT,
    ChargeRecord,
    DeliveryRow,
    DeliveryUpdate,
    Event,
    InboundRecord,
    JournalOutcome,
    MessageOutcome,
    StoredMessage,
)

# How far the clock may step back between two journal commits without a time-range
# search missing a message (see search_messages).
CLOCK_SLACK_SECONDS = 300.0

_MESSAGE_COLUMNS = ("id, channel, raw, transport, status, received_at, control_id, "
                    "message_type, sender, reason, meta, counts, mrn")


def _message(row: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        id=row[0], channel=row[1], raw=bytes(row[2]) if row[2] is not None else b"",
        transport=row[3], status=row[4], received_at=row[5], control_id=row[6],
        message_type=row[7], sender=row[8], reason=row[9], meta=json.loads(row[10] or "{}"),
        counts=json.loads(row[11] or "{}"), mrn=row[12])


class SqlStore(ABC):
    """The message store. Thread-safe: each thread gets its own connection."""

    tokens: dict[str, str]

    def __init__(self) -> None:
        self._local = threading.local()
        # Set by the GroupCommitter: this store's writes are ones an ACK waits on, so a
        # backend with a single write lock lets them go first.
        self.journal_priority = False

    # -- backend hooks -------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _sql(self, sql: str) -> str:
        """Translate portable SQL (`?` placeholders) to the driver's dialect."""

    @abstractmethod
    def claim_messages(self, owner: str, limit: int, lease_seconds: float) -> list[StoredMessage]:
        """Lease up to `limit` RECEIVED messages, oldest first, to `owner` (one transaction).

        A lease that expires (its node died) makes the message claimable again.
        """

    @abstractmethod
    def claim_deliveries(self, destination: str, owner: str, limit: int,
                         lease_seconds: float) -> list[DeliveryRow]:
        """Lease up to `limit` due QUEUED deliveries of one destination (one transaction)."""

    @abstractmethod
    def next_counter(self, name: str) -> int:
        """Next value of a durable counter (X12 control numbers); never reused."""

    def _lock_keys(self, cur: Any, keys: Sequence[str]) -> None:
        """Serialize this transaction against others touching the same keys (held until
        commit). SQLite needs nothing: BEGIN IMMEDIATE already serializes writers; a
        server backend takes transaction-scoped locks, in the sorted order given."""
        return None

    @contextmanager
    def batch_lock(self, destination: str) -> Iterator[bool]:
        """Hold the right to assemble `destination`'s next batch across nodes.

        Yields False when another node holds it (skip the destination this pass). One
        SQLite file serves one node, so there it is always granted.
        """
        yield True

    # -- plumbing ------------------------------------------------------------------
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self, read_only: bool = False) -> Iterator[Any]:
        """One database transaction on this thread's connection. `read_only` lets a
        backend avoid taking the write lock (SQLite: a deferred BEGIN)."""
        conn = self._conn()
        if read_only and hasattr(conn, "deferred_begin"):
            conn.deferred_begin = True
        try:
            cur = conn.cursor()
            yield cur
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one SELECT in a read-only transaction."""
        with self.transaction(read_only=True) as cur:
            return list(self._exec(cur, sql, params).fetchall())

    def checkpoint(self) -> None:  # noqa: B027 - a hook only the SQLite backend needs
        """Periodic housekeeping of the backend's write-ahead log (SQLite)."""

    def promote_inbox(self, limit: int | None = None) -> int:
        """Move journaled messages (the oldest `limit`, or all) from a backend's inbox into
        messages; returns how many.
        Backends that journal straight into messages (PostgreSQL) have nothing to move."""
        return 0

    def settle(self) -> None:  # noqa: B027 - a hook only backends with an inbox need
        """Make every acknowledged message visible to the reads below (operators must see
        a message the moment its ACK went out)."""

    def optimize(self) -> None:  # noqa: B027 - a hook only some backends need
        """Refresh the planner's statistics where the backend does not do it itself."""

    def ping(self) -> None:
        """A cheap round trip (readiness probes); raises when the database is unreachable."""
        self._query("SELECT 1")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def migrate(self) -> list[int]:
        """Apply pending numbered migrations; returns the versions applied."""
        applied: list[int] = []
        with self.transaction() as cur:
            self._exec(cur, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at "
                            + self.tokens["float"] + " NOT NULL)")
        done = {r[0] for r in self._query("SELECT version FROM schema_migrations")}
        for migration in migrations.available():
            if migration.version in done:
                continue
            with self.transaction() as cur:
                # Another process starting at the same moment may have applied it since
                # `done` was read; the write lock taken by this transaction settles it.
                if self._exec(cur, "SELECT 1 FROM schema_migrations WHERE version = ?",
                              (migration.version,)).fetchone() is not None:
                    continue
                for statement in migration.statements(self.tokens):
                    cur.execute(statement)
                self._exec(cur, "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                           (migration.version, migration.name, time.time()))
            applied.append(migration.version)
        return applied

    def _event(self, cur: Any, entity: str, entity_id: Any, status: str,
               reason: str | None, at: float) -> None:
        self._exec(cur, "INSERT INTO events (at, entity, entity_id, status, reason) "
                        "VALUES (?, ?, ?, ?, ?)", (at, entity, str(entity_id), status, reason))

    # -- ingest --------------------------------------------------------------------
    def journal(self, records: Sequence[InboundRecord]) -> list[JournalOutcome]:
        """Journal a group of inbound messages in ONE transaction (group commit).

        When this returns the messages are durable. A record whose sender + control id was
        journaled (and not in ERROR) within its duplicate window is not stored again: its
        outcome points at the original with duplicate=True.
        """
        now = time.time()
        out: list[JournalOutcome] = []
        batch_seen: dict[tuple[str, str, str, str], JournalOutcome] = {}
        with self.transaction() as cur:
            self._lock_keys(cur, sorted({f"dedupe:{r.channel}:{r.sender}:{r.control_id}"
                                         for r in records if r.checks_duplicates}))
            for rec in records:
                digest = rec.content_hash()
                key = (rec.channel, rec.sender, rec.control_id or "", digest)
                if rec.checks_duplicates:
                    if key in batch_seen:
                        out.append(JournalOutcome(batch_seen[key].message_id, True,
                                                  batch_seen[key].status))
                        continue
                    row = self._exec(
                        cur, "SELECT id, status FROM messages WHERE channel = ? AND sender = ? "
                        "AND control_id = ? AND +received_at >= ? AND status <> ? "
                        "AND content_hash = ? ORDER BY id LIMIT 1",
                        (rec.channel, rec.sender, rec.control_id,
                         now - rec.duplicate_window_seconds, ERROR, digest)).fetchone()
                    if row is not None:
                        out.append(JournalOutcome(row[0], True, row[1]))
                        continue
                message_id = self._insert_message(cur, rec, now)
                self._event(cur, "message", message_id, rec.status, rec.reason, now)
                outcome = JournalOutcome(message_id, False, rec.status)
                if rec.control_id and rec.status != ERROR:
                    batch_seen[key] = outcome
                out.append(outcome)
        return out

    def journal_nowait(self, records: Sequence[InboundRecord]) -> list[JournalOutcome] | None:
        """journal(), but None at once instead of waiting when another writer holds the
        write lock; None always where a commit costs network round trips (an event loop
        calls this on its own thread only when that is cheaper than a thread hand-off)."""
        return None

    def _insert_message(self, cur: Any, rec: InboundRecord, now: float) -> int:
        row = self._exec(
            cur, "INSERT INTO messages (channel, transport, peer, sender, control_id, "
            "message_type, status, reason, received_at, updated_at, raw, meta, content_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (rec.channel, rec.transport, rec.peer, rec.sender, rec.control_id,
             rec.message_type, rec.status, rec.reason, now, now, rec.raw,
             json.dumps(rec.meta), rec.content_hash())).fetchone()
        return int(row[0])

    # -- processing ----------------------------------------------------------------
    def complete_message(self, outcome: MessageOutcome, owner: str | None = None) -> bool:
        """Store everything processing decided, in ONE transaction: the message status,
        its charges (upserted by deterministic id), their deliveries and events.

        With `owner`, only while that owner still holds the message's lease: a processor
        that outlived its lease (another node took the message over) stores nothing and
        gets False. A charge already SENT is never rewritten (corrections go through
        their own path).
        """
        return self.complete_messages([outcome], owner)[0]

    def complete_messages(self, outcomes: Sequence[MessageOutcome],
                          owner: str | None = None) -> list[bool]:
        """complete_message for several messages in ONE transaction (one write lock and
        one commit for a processor's whole batch); a False per message whose lease
        `owner` lost."""
        now = time.time()
        done: list[bool] = []
        with self.transaction() as cur:
            for outcome in outcomes:
                done.append(self._complete(cur, outcome, owner, now))
        return done

    def _complete(self, cur: Any, outcome: MessageOutcome, owner: str | None,
                  now: float) -> bool:
        lease_clause, params = "", [outcome.status, outcome.reason, json.dumps(outcome.counts),
                                    outcome.mrn, outcome.message_type, outcome.control_id, now,
                                    outcome.message_id]
        if owner is not None:
            lease_clause = " AND lease_owner = ?"
            params.append(owner)
        updated = self._exec(
            cur, "UPDATE messages SET status = ?, reason = ?, counts = ?, mrn = ?, "
            "message_type = COALESCE(?, message_type), "
            "control_id = COALESCE(?, control_id), updated_at = ?, "
            "lease_owner = NULL, lease_until = NULL WHERE id = ?" + lease_clause,
            params).rowcount
        if not updated:
            return False
        self._event(cur, "message", outcome.message_id, outcome.status, outcome.reason, now)
        for record in outcome.charges:
            self._upsert_charge(cur, outcome.message_id, record, now)
        return True

    def _upsert_charge(self, cur: Any, message_id: int, record: ChargeRecord, now: float) -> None:
        charge = record.charge
        existing = self._exec(cur, "SELECT status FROM charges WHERE charge_id = ?",
                              (charge.charge_id,)).fetchone()
        if existing is not None and existing[0] in (SENT, QUEUED):
            return
        if existing is not None and self._exec(
                cur, "SELECT 1 FROM deliveries WHERE charge_id = ? AND status = ? LIMIT 1",
                (charge.charge_id, SENT)).fetchone() is not None:
            return  # partly delivered: rewriting it would change what a destination billed
        # The same JSON as to_json_dict(), serialised by pydantic's core (several times
        # faster than json.dumps of the dict on the processor's hot path).
        data = charge.model_dump_json()
        findings = json.dumps([f.model_dump() for f in record.findings]) if record.findings \
            else "[]"
        params = (message_id, charge.source.get("channel", ""), record.status,
                  charge.transaction_type, None if charge.amount is None else str(charge.amount),
                  None if charge.service_date is None else charge.service_date.isoformat(),
                  record.duplicate_key, data, findings, now)
        if existing is None:
            self._exec(cur, "INSERT INTO charges (message_id, channel, status, transaction_type, "
                            "amount, service_date, duplicate_key, data, findings, updated_at, "
                            "charge_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (*params, charge.charge_id, now))
        else:
            self._exec(cur, "UPDATE charges SET message_id = ?, channel = ?, status = ?, "
                            "transaction_type = ?, amount = ?, service_date = ?, "
                            "duplicate_key = ?, data = ?, findings = ?, updated_at = ? "
                            "WHERE charge_id = ?", (*params, charge.charge_id))
        reason = "; ".join(f.message for f in record.findings if f.severity == "hold") or None
        self._event(cur, "charge", charge.charge_id, record.status, reason, now)
        if record.status == QUEUED:
            self._queue_deliveries(cur, charge.charge_id, record.destinations, "original", now)

    def _queue_deliveries(self, cur: Any, charge_id: str, destinations: Sequence[str],
                          kind: str, now: float) -> None:
        """Queue one delivery per destination. A delivery that exists stays as it is,
        except a FAILED one (not cancelled by a credit): reprocessing after a fix or a
        release sends it again."""
        for destination in destinations:
            self._exec(cur, "INSERT INTO deliveries (charge_id, destination, kind, status, "
                            "next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT (charge_id, destination, kind) DO UPDATE SET "
                            "status = excluded.status, attempts = 0, "
                            "next_attempt_at = excluded.next_attempt_at, batch_id = NULL, "
                            "lease_owner = NULL, lease_until = NULL, detail = NULL, "
                            "updated_at = excluded.updated_at "
                            "WHERE deliveries.status = ? AND (deliveries.detail IS NULL OR "
                            "deliveries.detail NOT LIKE ?)",
                       (charge_id, destination, kind, QUEUED, now, now, now, FAILED,
                        CANCEL_PREFIX + "%"))

    def release_message_lease(self, message_id: int) -> None:
        """Give a claimed message back (e.g. on shutdown before processing it)."""
        with self.transaction() as cur:
            self._exec(cur, "UPDATE messages SET lease_owner = NULL, lease_until = NULL "
                            "WHERE id = ?", (message_id,))

    def release_leases(self, owner: str) -> None:
        """Release every lease `owner` holds (a node restarting under the same name)."""
        with self.transaction() as cur:
            self._exec(cur, "UPDATE messages SET lease_owner = NULL, lease_until = NULL "
                            "WHERE lease_owner = ?", (owner,))
            self._exec(cur, "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL "
                            "WHERE lease_owner = ?", (owner,))

    def duplicate_exists(self, key: str, message_id: int, since: float) -> bool:
        """Whether a charge with this duplicate key came from another message since `since`
        (charges of the same message are its own, e.g. when it is reprocessed)."""
        return key in self.existing_duplicates([key], message_id, since)

    def existing_duplicates(self, keys: Sequence[str], message_id: int,
                            since: float) -> set[str]:
        """duplicate_exists for several keys in one query: those that came from another
        message since `since`."""
        if not keys:
            return set()
        marks = ",".join("?" * len(keys))
        rows = self._query(f"SELECT DISTINCT duplicate_key FROM charges WHERE duplicate_key IN "
                           f"({marks}) AND message_id <> ? AND created_at >= ?",
                           (*keys, message_id, since))
        return {r[0] for r in rows}

    # -- delivery ------------------------------------------------------------------
    def assign_batch(self, delivery_ids: Sequence[int]) -> int:
        """Record that these deliveries go out together under a new batch id, BEFORE
        the destination acts: a crash mid-delivery re-delivers the same batch id, so a
        destination can recognise work it already finished (idempotency)."""
        batch_id = self.next_counter("delivery_batch")
        with self.transaction() as cur:
            for delivery_id in delivery_ids:
                self._exec(cur, "UPDATE deliveries SET batch_id = ? WHERE id = ?",
                           (batch_id, delivery_id))
        return batch_id

    def finish_deliveries(self, updates: Sequence[DeliveryUpdate]) -> None:
        """Record delivery outcomes and roll each charge's status up (one transaction)."""
        now = time.time()
        with self.transaction() as cur:
            for up in updates:
                if up.status == QUEUED:  # a retry: back in the queue later, batch forgotten
                    self._exec(cur, "UPDATE deliveries SET attempts = attempts + 1, "
                                    "next_attempt_at = ?, detail = ?, response = ?, "
                                    "lease_owner = NULL, lease_until = NULL, batch_id = NULL, "
                                    "updated_at = ? WHERE id = ?",
                               (up.next_attempt_at or now, up.detail, up.response, now,
                                up.delivery_id))
                else:
                    self._exec(cur, "UPDATE deliveries SET status = ?, attempts = attempts + 1, "
                                    "detail = ?, response = ?, result = ?, lease_owner = NULL, "
                                    "lease_until = NULL, updated_at = ? WHERE id = ?",
                               (up.status, up.detail, up.response, json.dumps(up.result), now,
                                up.delivery_id))
                self._event(cur, "delivery", up.delivery_id, up.status, up.detail or None, now)
                row = self._exec(cur, "SELECT charge_id FROM deliveries WHERE id = ?",
                                 (up.delivery_id,)).fetchone()
                if row is not None and up.status != QUEUED:
                    self._roll_up_charge(cur, row[0], now)

    def _roll_up_charge(self, cur: Any, charge_id: str, now: float) -> None:
        statuses = [r[0] for r in self._exec(
            cur, "SELECT status FROM deliveries WHERE charge_id = ?", (charge_id,)).fetchall()]
        if FAILED in statuses:
            new = FAILED
        elif statuses and all(s == SENT for s in statuses):
            new = SENT
        else:
            return
        updated = self._exec(cur, "UPDATE charges SET status = ?, updated_at = ? "
                                  "WHERE charge_id = ? AND status <> ?",
                             (new, now, charge_id, new)).rowcount
        if updated:
            self._event(cur, "charge", charge_id, new, None, now)

    def _delivery_rows(self, rows: Sequence[Any]) -> list[DeliveryRow]:
        return [DeliveryRow(id=r[0], charge_id=r[1], destination=r[2], status=r[3],
                            attempts=r[4], kind=r[5], batch_id=r[6],
                            charge=Charge.model_validate_json(r[7]))
                for r in rows]

    _DELIVERY_SELECT = ("SELECT d.id, d.charge_id, d.destination, d.status, d.attempts, d.kind, "
                        "d.batch_id, c.data FROM deliveries d JOIN charges c "
                        "ON c.charge_id = d.charge_id")

    def queued_charges_before(self, destination: str, before_id: int
                              ) -> list[tuple[int, tuple[str, str] | None]]:
        """(delivery id, (patient MRN, encounter id)) of original charges still QUEUED for
        `destination` below `before_id`: what a credit of the same encounter must wait for
        (a credit never overtakes its charge)."""
        rows = self._query(
            "SELECT d.id, c.data FROM deliveries d JOIN charges c ON c.charge_id = d.charge_id "
            "WHERE d.destination = ? AND d.status = ? AND d.kind = ? AND d.id < ? "
            "AND c.transaction_type = ?", (destination, QUEUED, "original", before_id, "charge"))
        out: list[tuple[int, tuple[str, str] | None]] = []
        for delivery_id, data in rows:
            charge = json.loads(data)
            encounter = (charge.get("encounter") or {}).get("id")
            mrn = (charge.get("patient") or {}).get("mrn") or ""
            out.append((int(delivery_id), (mrn, encounter) if encounter else None))
        return out

    # -- operator actions ----------------------------------------------------------
    def release_charge(self, charge_id: str, destinations: Sequence[str], who: str) -> bool:
        """Send a HELD charge on to its destinations; False when it is not HELD."""
        now = time.time()
        with self.transaction() as cur:
            updated = self._exec(cur, "UPDATE charges SET status = ?, updated_at = ? "
                                      "WHERE charge_id = ? AND status = ?",
                                 (QUEUED, now, charge_id, HELD)).rowcount
            if not updated:
                return False
            self._event(cur, "charge", charge_id, QUEUED, f"released by {who}", now)
            self._queue_deliveries(cur, charge_id, destinations, "original", now)
        return True

    def requeue_message(self, message_id: int, who: str) -> bool:
        """Put a message back to RECEIVED so the processor maps it again."""
        now = time.time()
        with self.transaction() as cur:
            updated = self._exec(cur, "UPDATE messages SET status = 'RECEIVED', reason = NULL, "
                                      "lease_owner = NULL, lease_until = NULL, updated_at = ? "
                                      "WHERE id = ?", (now, message_id)).rowcount
            if updated:
                self._event(cur, "message", message_id, "RECEIVED", f"reprocess by {who}", now)
        return bool(updated)

    # -- reads -----------------------------------------------------------------------
    def get_message(self, message_id: int) -> StoredMessage | None:
        self.settle()
        rows = self._query(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,))
        return _message(rows[0]) if rows else None

    def search_messages(self, *, channel: str | None = None, status: str | None = None,
                        control_id: str | None = None, message_type: str | None = None,
                        mrn: str | None = None, since: float | None = None,
                        until: float | None = None, before_id: int | None = None,
                        limit: int = 50) -> list[StoredMessage]:
        """Newest first, keyset-paginated by `before_id`; each filter has an index."""
        self.settle()
        where: list[str] = []
        params: list[object] = []
        for column, value in (("channel", channel), ("status", status),
                              ("control_id", control_id), ("message_type", message_type),
                              ("mrn", mrn)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        # A time range becomes an id range too (one index probe per bound): the
        # newest-first walk then runs down the primary key between the bounds instead of
        # sorting every row of a wide range. Ids follow journal order; the probes allow
        # CLOCK_SLACK_SECONDS of clock steps backwards between commits.
        for bound, op, order, slack in ((since, ">=", "", -CLOCK_SLACK_SECONDS),
                                        (until, "<", " DESC", CLOCK_SLACK_SECONDS)):
            if bound is None:
                continue
            edge = self._query(f"SELECT id FROM messages WHERE received_at {op} ? "
                               f"ORDER BY received_at{order} LIMIT 1", (bound + slack,))
            if not edge:
                return []
            where.append(f"+received_at {op} ?")
            params.append(bound)
            where.append("id >= ?" if op == ">=" else "id <= ?")
            params.append(edge[0][0])
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._query(f"SELECT {_MESSAGE_COLUMNS} FROM messages {clause} "
                           f"ORDER BY id DESC LIMIT ?", (*params, limit))
        return [_message(r) for r in rows]

    def charges_for_message(self, message_id: int) -> list[tuple[Charge, str, list[Finding]]]:
        rows = self._query("SELECT data, status, findings FROM charges WHERE message_id = ? "
                           "ORDER BY charge_id", (message_id,))
        return [(Charge.model_validate_json(r[0]), r[1],
                 [Finding.model_validate(f) for f in json.loads(r[2])]) for r in rows]

    def get_charge(self, charge_id: str) -> tuple[Charge, str, list[Finding], int] | None:
        rows = self._query("SELECT data, status, findings, message_id FROM charges "
                           "WHERE charge_id = ?", (charge_id,))
        if not rows:
            return None
        r = rows[0]
        return (Charge.model_validate_json(r[0]), r[1],
                [Finding.model_validate(f) for f in json.loads(r[2])], r[3])

    def deliveries_for_charge(self, charge_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT id, destination, kind, status, attempts, detail, response, "
                           "result, updated_at FROM deliveries WHERE charge_id = ? ORDER BY id",
                           (charge_id,))
        keys = ("id", "destination", "kind", "status", "attempts", "detail", "response",
                "result", "updated_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def events_for(self, entity: str, entity_id: Any) -> list[Event]:
        if entity == "message":
            self.settle()
        rows = self._query("SELECT at, entity, entity_id, status, reason FROM events "
                           "WHERE entity = ? AND entity_id = ? ORDER BY id",
                           (entity, str(entity_id)))
        return [Event(*r) for r in rows]

    def count_by_status(self, table: str = "messages") -> dict[str, int]:
        if table not in ("messages", "charges", "deliveries"):
            raise ValueError(table)
        if table == "messages":
            self.settle()
        return {r[0]: r[1] for r in self._query(
            f"SELECT status, COUNT(*) FROM {table} GROUP BY status")}

    def pending_deliveries(self, destination: str) -> tuple[int, float | None]:
        """How many deliveries wait for `destination` and when the oldest was queued."""
        rows = self._query("SELECT COUNT(*), MIN(created_at) FROM deliveries "
                           "WHERE destination = ? AND status = ?", (destination, QUEUED))
        return int(rows[0][0]), rows[0][1]


Store = SqlStore
