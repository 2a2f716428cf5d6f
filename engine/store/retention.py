"""Retention: drop old raw message content in small batches, keep the metadata.

Each batch is its own short transaction, so pruning millions of rows never holds long
locks or one huge transaction (on PostgreSQL the freed space is reused after autovacuum;
on SQLite after VACUUM). Messages still RECEIVED (not processed yet) and unresolved
ERRORs (an operator may still fix and reprocess them) keep their content.
"""

from __future__ import annotations

import time

import structlog

from engine.store.base import SqlStore
from engine.store.records import ERROR, RECEIVED

log = structlog.get_logger("chargebridge.store")


def prune_content(store: SqlStore, channel: str, older_than: float,
                  batch_size: int = 500) -> int:
    """Null the raw content of `channel`'s messages received before `older_than` (epoch
    seconds), `batch_size` rows per transaction; returns how many messages were pruned."""
    if batch_size < 1:
        raise ValueError(f"retention batch_size must be at least 1, got {batch_size}")
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
    return {channel: prune_content(store, channel, now - days * 86400.0, batch_size)
            for channel, days in days_by_channel.items()}
