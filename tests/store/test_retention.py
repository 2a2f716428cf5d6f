"""Retention: batch pruning of raw content on both backends."""

from __future__ import annotations

import time

from engine.store.base import SqlStore
from engine.store.records import ERROR, PROCESSED, InboundRecord, MessageOutcome
from engine.store.retention import prune_by_days, prune_content


def _journal(store: SqlStore, channel: str, count: int, status: str = "RECEIVED") -> list[int]:
    return [o.message_id for o in store.journal(
        [InboundRecord(channel=channel, raw=f"MSH|{i}".encode(), transport="mllp",
                       status=status) for i in range(count)])]


class TestPruneContent:
    def test_prunes_old_processed_content_in_batches(self, store: SqlStore) -> None:
        """Old processed messages lose their raw bytes (over several small batches) and
        keep their metadata; other channels and newer messages are untouched."""
        ids = _journal(store, "old", 7)
        other = _journal(store, "keep", 2)
        for mid in ids + other:
            store.complete_message(MessageOutcome(mid, PROCESSED, counts={"charges": 1}))
        assert prune_content(store, "old", time.time() - 3600, batch_size=3) == 0
        assert prune_content(store, "old", time.time() + 1, batch_size=3) == 7
        for mid in ids:
            message = store.get_message(mid)
            assert message is not None
            assert (message.raw, message.status, message.counts) == (b"", PROCESSED,
                                                                     {"charges": 1})
        assert all(m.raw for m in store.search_messages(channel="keep"))
        assert prune_content(store, "old", time.time() + 1) == 0

    def test_keeps_unprocessed_and_unresolved_error_content(self, store: SqlStore) -> None:
        """Messages still RECEIVED and ERROR messages an operator may fix keep their raw."""
        received = _journal(store, "c", 2)
        errors = _journal(store, "c", 2, status=ERROR)
        assert prune_by_days(store, {"c": 1}, now=time.time() + 3 * 86400) == {"c": 0}
        for mid in received + errors:
            message = store.get_message(mid)
            assert message is not None and message.raw
