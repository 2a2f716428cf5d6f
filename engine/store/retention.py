"""Retention: drop old raw message content, keep the metadata (messages rows, charges,
events, audit). Messages still RECEIVED (not processed yet) and unresolved ERRORs (an
operator may still fix and reprocess them) keep their content.

SQLite: content is nulled in small batches, each its own short transaction, so pruning
millions of rows never holds long locks (the space is reused; VACUUM gives it back).

PostgreSQL: content lives in daily partitions (engine/store/partitions.py). A day whose
rows are all past their channel's retention is dropped whole (DROP TABLE: the disk space
goes back to the operating system at once, no autovacuum needed); the content of its
RECEIVED/ERROR messages is copied to message_content_kept first. Channels sharing a day
with channels kept longer are pruned in batches as on SQLite. The channels with the
longest retention keep their content up to one day longer than `retention_days`.

Call `ensure_partitions(store)` from the node's upkeep (it is a no-op on SQLite), and
`prune_by_days(store, {channel: retention_days})` as before; both are safe on every node
at once.
"""

from __future__ import annotations

import time

import psycopg
import structlog

from engine.store import partitions
from engine.store.base import SqlStore
from engine.store.postgres import PostgresStore
from engine.store.records import ERROR, RECEIVED

log = structlog.get_logger("chargebridge.store")


def prune_content(store: SqlStore, channel: str, older_than: float,
                  batch_size: int = 500) -> int:
    """Null the raw content of `channel`'s messages received before `older_than` (epoch
    seconds), `batch_size` rows per transaction; returns how many messages were pruned."""
    if batch_size < 1:
        raise ValueError(f"retention batch_size must be at least 1, got {batch_size}")
    if isinstance(store, PostgresStore):
        total = partitions.prune_rows(store, channel, older_than, batch_size)
        if total:
            log.info("retention.pruned", channel=channel, count=total)
        return total
    total = 0
    while True:
        with store.transaction() as cur:
            pruned = store._exec(
                cur, "UPDATE messages SET raw = NULL, updated_at = ? WHERE id IN ("
                     "SELECT id FROM messages WHERE channel = ? AND received_at < ? AND "
                     "raw IS NOT NULL AND status NOT IN (?, ?) ORDER BY id LIMIT ?)",
                (time.time(), channel, older_than, RECEIVED, ERROR, batch_size)).rowcount
        total += pruned
        if pruned < batch_size:
            break
    if total:
        log.info("retention.pruned", channel=channel, count=total)
    return total


def prune_by_days(store: SqlStore, days_by_channel: dict[str, int],
                  batch_size: int = 500, now: float | None = None) -> dict[str, int]:
    """Apply each channel's `retention_days`; returns messages pruned per channel."""
    now = time.time() if now is None else now
    if isinstance(store, PostgresStore):
        return partitions.prune_partitioned(store, days_by_channel, batch_size, now)
    return {channel: prune_content(store, channel, now - days * 86400.0, batch_size)
            for channel, days in days_by_channel.items()}


def ensure_partitions(store: SqlStore, now: float | None = None, days_ahead: int = 2) -> list[str]:
    """Create the content partitions of today and the next `days_ahead` days ahead of
    need (PostgreSQL; nothing on SQLite); returns the names created. Gives up quietly on
    a day whose table is busy: journal creates a missing partition itself."""
    if not isinstance(store, PostgresStore):
        return []
    now = time.time() if now is None else now
    created = []
    for day in range(days_ahead + 1):
        start = partitions.day_start(now) + day * partitions.DAY
        try:
            if store.ensure_content_partition(start, partitions.UPKEEP_LOCK_TIMEOUT):
                created.append(partitions.partition_name(start))
        except psycopg.errors.LockNotAvailable:
            log.warning("store.partition_busy", partition=partitions.partition_name(start))
    return created
