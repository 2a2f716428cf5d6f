"""The SQLite journal's inbox: acknowledged messages are written to a lean table first and
promoted, same ids, into messages; and the event-loop side of group commit (batches per
loop iteration, a lone record journaled on the loop's thread unless the lock is held)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from engine.store.group_commit import GroupCommitter
from engine.store.records import ERROR, PROCESSED, RECEIVED, InboundRecord, MessageOutcome
from engine.store.sqlite import SqliteStore


def _record(control_id: str, raw: bytes = b"MSH|^~\\&|EHR|FAC\r") -> InboundRecord:
    return InboundRecord(channel="ehr", raw=raw, transport="mllp", peer="127.0.0.1:1",
                         sender="EHR^FAC", control_id=control_id, message_type="DFT^P03",
                         duplicate_window_seconds=3600.0)


def _store(path: Path) -> SqliteStore:
    store = SqliteStore(path / "store.db")
    store.migrate()
    return store


def _rows(path: Path, table: str) -> list[int]:
    conn = sqlite3.connect(path / "store.db")
    try:
        return [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY id")]
    finally:
        conn.close()


class TestInbox:
    def test_promotion_keeps_ids_and_adds_the_received_event(self, tmp_path: Path) -> None:
        store = _store(tmp_path)
        ids = [o.message_id for o in store.journal([_record("A"), _record("B")])]
        assert _rows(tmp_path, "inbox") == ids and _rows(tmp_path, "messages") == []
        assert store.promote_inbox() == 2
        assert _rows(tmp_path, "inbox") == [] and _rows(tmp_path, "messages") == ids
        assert [e.status for e in store.events_for("message", ids[0])] == [RECEIVED]
        assert store.get_message(ids[1]).raw == b"MSH|^~\\&|EHR|FAC\r"  # type: ignore[union-attr]

    def test_promotion_in_chunks_moves_the_oldest_first(self, tmp_path: Path) -> None:
        store = _store(tmp_path)
        ids = [o.message_id for o in store.journal([_record(f"M{i}") for i in range(5)])]
        assert store.promote_inbox(limit=2) == 2
        assert _rows(tmp_path, "messages") == ids[:2] and _rows(tmp_path, "inbox") == ids[2:]
        assert store.promote_inbox(limit=10) == 3

    def test_a_resend_is_a_duplicate_whether_or_not_its_original_was_promoted(
            self, tmp_path: Path) -> None:
        store = _store(tmp_path)
        [first] = store.journal([_record("A")])
        [again] = store.journal([_record("A")])  # the original is still in the inbox
        assert again.duplicate and again.message_id == first.message_id
        store.promote_inbox()
        [third] = store.journal([_record("A")])
        assert third.duplicate and third.message_id == first.message_id
        [changed] = store.journal([_record("A", raw=b"MSH|^~\\&|EHR|FAC|corrected\r")])
        assert not changed.duplicate  # same control id, different bytes: stored

    def test_ids_are_never_reused(self, tmp_path: Path) -> None:
        """Promotion empties the inbox; the next id still follows every id ever used."""
        store = _store(tmp_path)
        ids = [o.message_id for o in store.journal([_record(f"M{i}") for i in range(3)])]
        store.promote_inbox()
        [later] = store.journal([_record("M9")])
        assert later.message_id == max(ids) + 1

    def test_a_restart_promotes_what_a_crash_left_in_the_inbox(self, tmp_path: Path) -> None:
        store = _store(tmp_path)
        [outcome] = store.journal([_record("A")])
        store.close()  # as if the process died before promoting
        assert _rows(tmp_path, "inbox") == [outcome.message_id]
        _store(tmp_path)
        assert _rows(tmp_path, "inbox") == []
        assert _rows(tmp_path, "messages") == [outcome.message_id]

    def test_the_processor_claims_messages_still_in_the_inbox(self, tmp_path: Path) -> None:
        store = _store(tmp_path)
        [outcome] = store.journal([_record("A")])
        other = SqliteStore(tmp_path / "store.db", fsync=False)  # the processor's own
        [claimed] = other.claim_messages("node:process", 10, lease_seconds=60)
        assert claimed.id == outcome.message_id and claimed.status == RECEIVED
        assert other.complete_messages(
            [MessageOutcome(claimed.id, PROCESSED, None)], "node:process") == [True]
        assert store.get_message(outcome.message_id).status == PROCESSED  # type: ignore[union-attr]

    def test_reads_see_a_message_the_moment_it_is_journaled(self, tmp_path: Path) -> None:
        store = _store(tmp_path)
        [ok] = store.journal([_record("A")])
        bad = InboundRecord(channel="ehr", raw=b"garbage", transport="mllp", status=ERROR,
                            reason="cannot read message")
        [refused] = store.journal([bad])
        other = SqliteStore(tmp_path / "store.db")  # an operator's API process
        assert [m.id for m in other.search_messages()] == [refused.message_id, ok.message_id]
        assert other.count_by_status() == {RECEIVED: 1, ERROR: 1}


class TestLoopBatching:
    def test_senders_of_one_loop_iteration_share_a_commit(self, tmp_path: Path) -> None:
        store = _CountingStore(tmp_path / "store.db")
        store.migrate()
        committer = GroupCommitter(store)

        async def send_all() -> list[int]:
            outcomes = await asyncio.gather(*(committer.journal(_record(f"M{i}"))
                                              for i in range(8)))
            return [o.message_id for o in outcomes]

        ids = asyncio.run(send_all())
        committer.close()
        assert len(set(ids)) == 8
        assert store.batches == [8]  # one transaction, not eight

    def test_a_lone_record_waits_for_a_held_lock_without_blocking_the_loop(
            self, tmp_path: Path) -> None:
        """Another process holds the write lock: the record is handed to the writer thread
        (which waits for the lock) and the event loop keeps serving meanwhile."""
        store = _store(tmp_path)
        committer = GroupCommitter(store)
        holder = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")

        async def scenario() -> tuple[int, int]:
            journal = asyncio.ensure_future(committer.journal(_record("A")))
            ticks = 0
            started = time.monotonic()
            while time.monotonic() - started < 0.3:
                await asyncio.sleep(0.01)
                ticks += 1
            assert not journal.done(), "journaled while another process held the write lock"
            holder.execute("COMMIT")
            return (await journal).message_id, ticks

        message_id, ticks = asyncio.run(scenario())
        committer.close()
        holder.close()
        # The loop ran while the record waited (30 ticks on an idle machine).
        assert ticks >= 5, f"the event loop ticked only {ticks} times in 0.3 s"
        assert store.get_message(message_id) is not None


class _CountingStore(SqliteStore):
    """A real SQLite store that records the size of every journal transaction."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []

    def journal(self, records):  # type: ignore[no-untyped-def]
        self.batches.append(len(records))
        return super().journal(records)
