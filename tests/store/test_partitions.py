"""PostgreSQL only: raw content in daily partitions; retention drops whole days."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest

from engine.store import partitions, postgres
from engine.store.postgres import PostgresStore
from engine.store.records import ERROR, PROCESSED, InboundRecord, MessageOutcome
from engine.store.retention import ensure_partitions, prune_by_days, prune_content
from engine.store.sqlite import SqliteStore
from tests.store.pg import private_schema

DAY = partitions.DAY
NOW = time.time()
TODAY = partitions.day_start(NOW)


@pytest.fixture
def make_pg() -> Iterator[Callable[[], PostgresStore]]:
    """Opens migrated stores (like nodes) on one private schema."""
    opened: list[PostgresStore] = []
    with private_schema("cbpart") as url:
        def factory() -> PostgresStore:
            store = PostgresStore(url, beat_seconds=0.5)
            opened.append(store)
            store.migrate()
            return store
        yield factory
        for store in opened:
            store.dispose()


@pytest.fixture
def pg(make_pg: Callable[[], PostgresStore]) -> PostgresStore:
    return make_pg()


def _journal_at(monkeypatch: pytest.MonkeyPatch, store: PostgresStore, at: float,
                channel: str, count: int, status: str = "RECEIVED") -> list[int]:
    """Journal `count` messages as if received at `at` (the store's clock only)."""
    monkeypatch.setattr(postgres, "time", SimpleNamespace(time=lambda: at))
    try:
        outcomes = store.journal([InboundRecord(channel=channel, raw=f"MSH|{channel}|{i}".encode(),
                                                transport="mllp", status=status)
                                  for i in range(count)])
    finally:
        monkeypatch.setattr(postgres, "time", time)
    return [o.message_id for o in outcomes]


def _process(store: PostgresStore, ids: list[int]) -> None:
    for mid in ids:
        store.complete_message(MessageOutcome(mid, PROCESSED, counts={"charges": 1}))


def _partitions(store: PostgresStore) -> dict[str, int]:
    """Each content partition in the schema and its total size in bytes."""
    return {r[0]: int(r[1]) for r in store._query(
        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass('message_content')")}


def _raw(store: PostgresStore, message_id: int) -> bytes:
    message = store.get_message(message_id)
    assert message is not None
    return message.raw


class TestJournal:
    def test_content_goes_to_the_partition_of_its_day(
            self, pg: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """Messages journaled on three days land in three partitions, read back exactly
        by get_message, search_messages and claim_messages; messages.raw holds none."""
        days = [TODAY - 9 * DAY, TODAY - 8 * DAY, TODAY]
        ids = [_journal_at(monkeypatch, pg, day + 3600, "c", 2) for day in days]
        names = {partitions.partition_name(day) for day in days}
        assert names <= set(_partitions(pg))
        assert _raw(pg, ids[0][1]) == b"MSH|c|1"
        assert {m.id: m.raw for m in pg.search_messages(channel="c")} == {
            mid: f"MSH|c|{i}".encode() for group in ids for i, mid in enumerate(group)}
        claimed = pg.claim_messages("node-a:process", 10, 60.0)
        assert [m.raw for m in claimed] == [b"MSH|c|0", b"MSH|c|1"] * 3
        assert pg._query("SELECT COUNT(*) FROM messages WHERE octet_length(raw) > 0") == [(0,)]

    def test_a_dropped_partition_is_made_again_on_demand(
            self, make_pg: Callable[[], PostgresStore], monkeypatch: pytest.MonkeyPatch) -> None:
        """A node whose cached partition was dropped by another still journals that day."""
        a, b = make_pg(), make_pg()
        _journal_at(monkeypatch, a, TODAY - 20 * DAY, "c", 1)
        with b.transaction() as cur:
            cur.execute(f"DROP TABLE {partitions.partition_name(TODAY - 20 * DAY)}")
        [mid] = _journal_at(monkeypatch, a, TODAY - 20 * DAY + 60, "c", 1)
        assert _raw(b, mid) == b"MSH|c|0"

    def test_nodes_creating_the_same_partition_at_once_do_not_fail(
            self, make_pg: Callable[[], PostgresStore], monkeypatch: pytest.MonkeyPatch) -> None:
        """Four nodes creating one day's partition together: one creates it, none fails,
        and all journal into it."""
        stores = [make_pg() for _ in range(4)]
        start = TODAY + 30 * DAY
        barrier = threading.Barrier(len(stores))
        created: list[bool] = [False] * len(stores)
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                barrier.wait(timeout=30)
                created[i] = stores[i].ensure_content_partition(start)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        assert created.count(True) == 1
        ids = [_journal_at(monkeypatch, s, start + 10, "c", 1)[0] for s in stores]
        assert [_raw(stores[0], mid) for mid in ids] == [b"MSH|c|0"] * 4

    def test_ensure_partitions_makes_days_ahead_and_nothing_on_sqlite(
            self, pg: PostgresStore, tmp_path: object) -> None:
        """Upkeep creates today's and the next days' partitions once; SQLite needs none."""
        far = TODAY + 100 * DAY
        made = ensure_partitions(pg, now=far, days_ahead=2)
        assert made == [partitions.partition_name(far + d * DAY) for d in range(3)]
        assert ensure_partitions(pg, now=far, days_ahead=2) == []
        lite = SqliteStore(f"{tmp_path}/store.db")
        lite.migrate()
        assert ensure_partitions(lite) == []
        lite.close()


class TestRetention:
    def test_old_days_are_dropped_and_space_returned(
            self, pg: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """Days past retention are dropped as tables (their size leaves the database);
        metadata stays, recent content and unresolved ERROR content stay readable."""
        old_days = [TODAY - 12 * DAY, TODAY - 11 * DAY]
        processed = [mid for day in old_days for mid in _journal_at(monkeypatch, pg,
                                                                    day + 600, "c", 3)]
        _process(pg, processed)
        errors = _journal_at(monkeypatch, pg, old_days[0] + 900, "c", 2, status=ERROR)
        waiting = _journal_at(monkeypatch, pg, old_days[1] + 900, "c", 1)
        recent = _journal_at(monkeypatch, pg, NOW, "c", 2)
        _process(pg, recent)
        before = _partitions(pg)
        old_names = {partitions.partition_name(day) for day in old_days}
        assert old_names <= set(before)

        assert prune_by_days(pg, {"c": 10}, batch_size=2, now=NOW) == {"c": 6}

        after = _partitions(pg)
        assert not old_names & set(after)
        assert sum(after.values()) < sum(before.values())
        assert pg._query("SELECT COUNT(*) FROM pg_class WHERE relname = ANY(?)",
                         (sorted(old_names),)) == [(0,)]
        for mid in processed:
            message = pg.get_message(mid)
            assert message is not None
            assert (message.raw, message.status, message.counts) == (b"", PROCESSED,
                                                                     {"charges": 1})
        assert [_raw(pg, mid) for mid in errors + waiting] == [b"MSH|c|0", b"MSH|c|1",
                                                               b"MSH|c|0"]
        assert [_raw(pg, mid) for mid in recent] == [b"MSH|c|0", b"MSH|c|1"]
        assert pg.count_by_status()[PROCESSED] == 8
        assert prune_by_days(pg, {"c": 10}, now=NOW) == {"c": 0}

    def test_kept_error_content_is_pruned_once_resolved(
            self, pg: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """An ERROR message kept from a dropped day loses its content after it is fixed."""
        [mid] = _journal_at(monkeypatch, pg, TODAY - 12 * DAY, "c", 1, status=ERROR)
        prune_by_days(pg, {"c": 10}, now=NOW)
        assert _raw(pg, mid) == b"MSH|c|0"
        _process(pg, [mid])
        assert prune_by_days(pg, {"c": 10}, now=NOW) == {"c": 1}
        assert _raw(pg, mid) == b""
        assert pg._query("SELECT COUNT(*) FROM message_content_kept") == [(0,)]

    def test_a_day_shared_with_longer_retention_is_pruned_in_batches(
            self, pg: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """A day holding a short- and a long-retention channel keeps its partition: the
        short channel's content is deleted row by row, the long one's stays until it
        expires too, and then the whole day is dropped."""
        day = TODAY - 6 * DAY
        short = _journal_at(monkeypatch, pg, day + 60, "short", 3)
        long = _journal_at(monkeypatch, pg, day + 120, "long", 2)
        _process(pg, short + long)
        name = partitions.partition_name(day)

        assert prune_by_days(pg, {"short": 2, "long": 8}, batch_size=2, now=NOW) == {
            "short": 3, "long": 0}
        assert name in _partitions(pg)
        assert [_raw(pg, mid) for mid in short] == [b""] * 3
        assert [_raw(pg, mid) for mid in long] == [b"MSH|long|0", b"MSH|long|1"]

        later = NOW + 4 * DAY
        assert prune_by_days(pg, {"short": 2, "long": 8}, now=later) == {"short": 0,
                                                                         "long": 2}
        assert name not in _partitions(pg)
        assert [_raw(pg, mid) for mid in long] == [b""] * 2

    def test_a_channel_without_retention_keeps_its_content(
            self, pg: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """A day shared with a channel that has no retention is never dropped; the
        retained channel's rows there are pruned in batches (one day late at most)."""
        day = TODAY - 9 * DAY
        forever = _journal_at(monkeypatch, pg, day + 60, "forever", 2)
        pruned = _journal_at(monkeypatch, pg, day + 120, "c", 2)
        _process(pg, forever + pruned)
        assert prune_by_days(pg, {"c": 7}, now=NOW) == {"c": 2}
        assert partitions.partition_name(day) in _partitions(pg)
        assert [_raw(pg, mid) for mid in forever] == [b"MSH|forever|0", b"MSH|forever|1"]
        assert [_raw(pg, mid) for mid in pruned] == [b""] * 2

    def test_content_stored_before_partitioning_is_read_and_pruned(
            self, pg: PostgresStore) -> None:
        """A message whose raw is still in messages.raw (journaled by an older version)
        reads as before and is pruned by prune_content."""
        with pg.transaction() as cur:
            mid = cur.execute(
                "INSERT INTO messages (channel, transport, status, received_at, updated_at, "
                "raw) VALUES ('c', 'mllp', %s, %s, %s, %s) RETURNING id",
                (PROCESSED, NOW - 50 * DAY, NOW, b"MSH|legacy")).fetchone()[0]
        assert _raw(pg, mid) == b"MSH|legacy"
        assert prune_content(pg, "c", NOW - 40 * DAY) == 1
        assert _raw(pg, mid) == b""
