"""Group commit: concurrent records share one transaction, and one record the database
refuses fails only its own sender."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from engine.store import open_store
from engine.store.group_commit import GroupCommitter
from engine.store.records import InboundRecord
from engine.store.sqlite import SqliteStore


class _RefusesPoison(SqliteStore):
    """A real SQLite store whose database refuses any record marked b'POISON' (as a
    database refuses a value it cannot store)."""

    hold = threading.Event()
    batches: list[int] = []

    def journal(self, records: Any) -> Any:
        self.batches.append(len(records))
        if any(r.raw == b"first" for r in records):
            self.hold.wait(10)  # keeps the writer busy while the next records queue up
        if any(r.raw == b"POISON" for r in records):
            raise ValueError("value refused by the database")
        return super().journal(records)


class TestGroupCommitter:
    def test_a_refused_record_fails_alone(self, tmp_path: Path) -> None:
        """Records queued together with a refused one are still journaled; only the refused
        record's waiter gets the error."""
        store = _RefusesPoison(tmp_path / "store.db")
        store.migrate()
        committer = GroupCommitter(store)
        blocker = committer.submit(InboundRecord("c", b"first", "test"))
        while not store.batches:  # the writer is inside the first commit
            threading.Event().wait(0.01)
        futures = [committer.submit(InboundRecord("c", raw, "test"))
                   for raw in (b"MSH|a", b"POISON", b"MSH|b")]
        store.hold.set()
        blocker.result(10)
        assert futures[0].result(10).message_id > 0
        with pytest.raises(ValueError):
            futures[1].result(10)
        assert futures[2].result(10).message_id > 0
        assert 3 in store.batches  # the three really shared one commit attempt
        committer.close()
        check = open_store(f"sqlite:///{tmp_path / 'store.db'}")
        assert sorted(m.raw for m in check.search_messages()) == [b"MSH|a", b"MSH|b", b"first"]
