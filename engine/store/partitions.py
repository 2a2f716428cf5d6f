"""PostgreSQL only: raw message content in daily partitions, so retention drops whole days.

`message_content(message_id, received_at, channel, raw)` is PARTITIONED BY RANGE
(received_at), one partition per UTC day named `message_content_pYYYYMMDD`. The messages
row keeps the metadata; its `raw` is '' (empty) while the content lives here and NULL once
retention pruned it, so `raw IS NULL` still means "pruned" on both backends. Rows journaled
before partitioning keep their content in messages.raw and are read from there.

Partitions are created ahead by `engine.store.retention.ensure_partitions` and on demand by
PostgresStore.journal, under an advisory lock (nodes never race on one name). Retention
(`prune_partitioned`) runs on one node at a time (a session advisory lock):

1. A partition whose day lies wholly before the retention cutoff of every channel with rows
   in it is dropped: the messages rows are marked pruned in batches first, content of
   messages still RECEIVED or in ERROR is copied to `message_content_kept`, then
   `DROP TABLE` returns the space to the operating system at once.
2. Everything else past its channel's cutoff is deleted in batches (short transactions):
   channels sharing a day with channels that keep content longer, or with channels
   without retention. The channels with the longest retention wait up to one more day,
   so their content goes with the whole partition instead of row by row.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
import structlog
from psycopg import sql

from engine.store.records import ERROR, RECEIVED

if TYPE_CHECKING:
    from engine.store.postgres import PostgresStore

log = structlog.get_logger("chargebridge.store")

DAY = 86400
PREFIX = "message_content_p"

# The tables; idempotent, run by PostgresStore.migrate after the shared migrations.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS message_content (message_id BIGINT NOT NULL, "
    "received_at DOUBLE PRECISION NOT NULL, channel TEXT NOT NULL, raw BYTEA, "
    "PRIMARY KEY (message_id, received_at)) PARTITION BY RANGE (received_at)",
    "CREATE TABLE IF NOT EXISTS message_content_kept (message_id BIGINT PRIMARY KEY, "
    "received_at DOUBLE PRECISION NOT NULL, channel TEXT NOT NULL, raw BYTEA)",
)

# Creating or dropping a partition briefly locks the whole message_content table; an
# upkeep pass gives up rather than queue ingest behind it while the table is busy.
UPKEEP_LOCK_TIMEOUT = "2s"


@dataclass(frozen=True)
class Partition:
    name: str
    start: int  # epoch seconds, UTC midnight; the range is [start, start + DAY)

    @property
    def end(self) -> int:
        return self.start + DAY


def day_start(at: float) -> int:
    """The UTC midnight (epoch seconds) that begins the day holding `at`."""
    return int(at // DAY) * DAY


def partition_name(start: int) -> str:
    return PREFIX + datetime.fromtimestamp(start, UTC).strftime("%Y%m%d")


def create_partition(cur: Any, start: int) -> bool:
    """Create the partition for the day beginning at `start` unless it exists; True when
    created. The caller holds the partition advisory lock (see PostgresStore)."""
    name = partition_name(start)
    if cur.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None:
        return False
    cur.execute(sql.SQL("CREATE TABLE {} PARTITION OF message_content "
                        "FOR VALUES FROM ({}) TO ({})")
                .format(sql.Identifier(name), sql.Literal(start), sql.Literal(start + DAY)))
    log.info("store.partition_created", partition=name)
    return True


def partitions(cur: Any) -> list[Partition]:
    """The day partitions of message_content, oldest first (others are ignored)."""
    rows = cur.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass('message_content')").fetchall()
    found = []
    for (name,) in rows:
        digits = name[len(PREFIX):]
        if name.startswith(PREFIX) and len(digits) == 8 and digits.isdigit():
            moment = datetime.strptime(digits, "%Y%m%d").replace(tzinfo=UTC)
            found.append(Partition(name, int(moment.timestamp())))
    return sorted(found, key=lambda p: p.start)


@contextmanager
def _retention_lock(store: PostgresStore) -> Iterator[bool]:
    """One node prunes at a time (session advisory lock); yields False when another does."""
    key = store._key("retention", "")
    with store.transaction() as cur:
        held = bool(cur.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0])
    try:
        yield held
    finally:
        if held:
            with suppress(psycopg.Error), store.transaction() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))


def prune_partitioned(store: PostgresStore, days_by_channel: dict[str, int],
                      batch_size: int = 500, now: float | None = None) -> dict[str, int]:
    """Apply each channel's `retention_days` on PostgreSQL (drop whole days where every
    row is past its channel's retention, batches elsewhere); messages pruned per channel.
    Returns zeros when another node is pruning right now."""
    now = time.time() if now is None else now
    pruned = dict.fromkeys(days_by_channel, 0)
    if not days_by_channel:
        return pruned
    cutoffs = {channel: now - days * DAY for channel, days in days_by_channel.items()}
    with _retention_lock(store) as held:
        if not held:
            return pruned
        for channel, count in _drop_expired(store, cutoffs, batch_size, now).items():
            pruned[channel] += count
        longest = min(cutoffs.values())
        for channel, cutoff in cutoffs.items():
            # The longest-kept channels wait a day more: their day then goes as a whole.
            before = cutoff - DAY if cutoff == longest else cutoff
            pruned[channel] += prune_rows(store, channel, before, batch_size, now)
    return pruned


def _drop_expired(store: PostgresStore, cutoffs: dict[str, float], batch_size: int,
                  now: float) -> dict[str, int]:
    pruned: dict[str, int] = {}
    with store.transaction() as cur:
        found = partitions(cur)
    for part in found:
        expired = sorted(c for c, cutoff in cutoffs.items() if cutoff >= part.end)
        if not expired:
            break  # later days are younger still
        if store._blocked_partitions.get(part.name) == tuple(expired):
            continue
        with store.transaction() as cur:
            blocked = cur.execute(
                sql.SQL("SELECT 1 FROM {} WHERE channel <> ALL(%s) LIMIT 1")
                .format(sql.Identifier(part.name)), (expired,)).fetchone() is not None
        if blocked:  # rows of channels kept longer (or forever): batches handle the rest
            store._blocked_partitions[part.name] = tuple(expired)
            continue
        for channel in expired:
            count = _mark_pruned(store, channel, part, batch_size, now)
            if count:
                pruned[channel] = pruned.get(channel, 0) + count
        _keep_protected(store, part)
        try:
            with store.transaction() as cur:
                cur.execute(f"SET LOCAL lock_timeout = '{UPKEEP_LOCK_TIMEOUT}'")
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(part.name)))
        except psycopg.errors.LockNotAvailable:
            log.warning("retention.partition_busy", partition=part.name)
            continue  # the next pass tries again; nothing was lost
        store._known_partitions.discard(part.start)
        log.info("retention.partition_dropped", partition=part.name)
    return pruned


def _mark_pruned(store: PostgresStore, channel: str, part: Partition, batch_size: int,
                 now: float) -> int:
    """Set messages.raw NULL (pruned) for `channel`'s rows of one day, in batches; rows
    still RECEIVED or in ERROR keep theirs."""
    total = 0
    while True:
        with store.transaction() as cur:
            count = cur.execute(
                "UPDATE messages SET raw = NULL, updated_at = %s WHERE id IN (SELECT id "
                "FROM messages WHERE channel = %s AND received_at >= %s AND received_at < %s "
                "AND raw IS NOT NULL AND status NOT IN (%s, %s) ORDER BY id LIMIT %s) "
                "AND raw IS NOT NULL AND status NOT IN (%s, %s)",
                (now, channel, part.start, part.end, RECEIVED, ERROR, batch_size,
                 RECEIVED, ERROR)).rowcount
        total += count
        if count < batch_size:
            return total


def _keep_protected(store: PostgresStore, part: Partition) -> None:
    """Copy the content of the day's messages not marked pruned (RECEIVED, ERROR) out of
    the partition before it is dropped. The set only shrinks from here: nothing gives a
    pruned message its content back, and retention runs on one node at a time."""
    with store.transaction() as cur:
        kept = cur.execute(
            sql.SQL("INSERT INTO message_content_kept (message_id, received_at, channel, raw) "
                    "SELECT c.message_id, c.received_at, c.channel, c.raw FROM {} c "
                    "JOIN messages m ON m.id = c.message_id WHERE m.raw IS NOT NULL "
                    "ON CONFLICT (message_id) DO NOTHING")
            .format(sql.Identifier(part.name))).rowcount
    if kept:
        log.info("retention.content_kept", partition=part.name, count=kept)


def prune_rows(store: PostgresStore, channel: str, older_than: float, batch_size: int = 500,
               now: float | None = None) -> int:
    """Prune `channel`'s content received before `older_than` row by row, `batch_size`
    messages per transaction: mark the messages row, delete the content (partition,
    kept table, or messages.raw of rows journaled before partitioning)."""
    if batch_size < 1:
        raise ValueError(f"retention batch_size must be at least 1, got {batch_size}")
    now = time.time() if now is None else now
    total = 0
    while True:
        with store.transaction() as cur:
            rows = cur.execute(
                "UPDATE messages SET raw = NULL, updated_at = %s WHERE id IN (SELECT id "
                "FROM messages WHERE channel = %s AND received_at < %s AND raw IS NOT NULL "
                "AND status NOT IN (%s, %s) ORDER BY id LIMIT %s) "
                "AND raw IS NOT NULL AND status NOT IN (%s, %s) RETURNING id, received_at",
                (now, channel, older_than, RECEIVED, ERROR, batch_size, RECEIVED,
                 ERROR)).fetchall()
            _delete_content(cur, [r[0] for r in rows], [r[1] for r in rows])
        total += len(rows)
        if len(rows) < batch_size:
            return total


def _delete_content(cur: Any, ids: Sequence[int], received: Sequence[float]) -> None:
    if not ids:
        return
    # received_at = ANY(...) lets PostgreSQL visit only the partitions of those days.
    cur.execute("DELETE FROM message_content WHERE received_at = ANY(%s) "
                "AND message_id = ANY(%s)", (list(received), list(ids)))
    cur.execute("DELETE FROM message_content_kept WHERE message_id = ANY(%s)", (list(ids),))
