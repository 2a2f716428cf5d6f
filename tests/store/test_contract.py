"""The store contract: every SqlStore method behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

from engine.charge import Charge, Finding
from engine.store import migrations
from engine.store.base import SqlStore
from engine.store.records import (
    ERROR,
    FAILED,
    HELD,
    PROCESSED,
    QUEUED,
    RECEIVED,
    SENT,
    ChargeRecord,
    DeliveryUpdate,
    InboundRecord,
    MessageOutcome,
)
from tests.store.conftest import StoreFactory


def _record(control_id: str | None = "C1", *, channel: str = "ehr", sender: str = "EHR^FAC",
            raw: bytes = b"MSH|^~\\&|EHR|FAC\r", window: float = 3600.0,
            status: str = RECEIVED, message_type: str | None = "DFT^P03") -> InboundRecord:
    return InboundRecord(channel=channel, raw=raw, transport="mllp", peer="127.0.0.1:1",
                         sender=sender, control_id=control_id, message_type=message_type,
                         status=status, reason="bad" if status == ERROR else None,
                         meta={"port": 1}, duplicate_window_seconds=window)


def _journal(store: SqlStore, count: int, **kwargs: Any) -> list[int]:
    outcomes = store.journal([_record(f"M{i}", **kwargs) for i in range(count)])
    return [o.message_id for o in outcomes]


def _charge(charge_id: str, amount: str = "125.00") -> Charge:
    return Charge(charge_id=charge_id, amount=Decimal(amount), service_date=date(2024, 3, 1),
                  source={"channel": "ehr", "line": charge_id})


def _outcome(message_id: int, *records: ChargeRecord, status: str = PROCESSED) -> MessageOutcome:
    return MessageOutcome(message_id, status, None, list(records), {"charges": len(records)},
                          mrn="MRN1", message_type="DFT^P03", control_id="C1")


def _queued(charge_id: str, *destinations: str, amount: str = "125.00") -> ChargeRecord:
    return ChargeRecord(_charge(charge_id, amount), QUEUED, [], list(destinations or ["d1"]),
                        duplicate_key=f"dup-{charge_id}")


def _wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached within the timeout")


def _in_threads(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # surfaced below: a thread's failure fails the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


class TestMigrate:
    def test_migrate_twice_applies_nothing_the_second_time(self, store: SqlStore) -> None:
        """A second migrate() finds every shipped migration recorded and applies none."""
        assert store.migrate() == []
        recorded = sorted(r[0] for r in store._query("SELECT version FROM schema_migrations"))
        assert recorded == [m.version for m in migrations.available()]

    def test_nodes_starting_together_apply_each_migration_once(
            self, make_store: StoreFactory) -> None:
        """Three stores migrating one fresh database at the same moment apply every
        migration exactly once between them."""
        stores = [make_store(migrate=False) for _ in range(3)]
        applied: list[list[int]] = [[] for _ in stores]

        def work(i: int) -> None:
            applied[i] = stores[i].migrate()

        _in_threads(3, work)
        every = sorted(v for versions in applied for v in versions)
        assert every == [m.version for m in migrations.available()]


class TestJournal:
    def test_control_id_reused_with_other_content_is_stored(self, store: SqlStore) -> None:
        """A resend with the same bytes is a duplicate; the same sender + control id with
        different bytes (a corrected message) is stored as a message of its own, also
        when both arrive in one group."""
        [first] = store.journal([_record("R1", raw=b"MSH|original\r")])
        [same] = store.journal([_record("R1", raw=b"MSH|original\r")])
        assert same.duplicate and same.message_id == first.message_id
        [changed] = store.journal([_record("R1", raw=b"MSH|corrected\r")])
        assert not changed.duplicate and changed.message_id != first.message_id
        one, two = store.journal([_record("R2", raw=b"MSH|a\r"), _record("R2", raw=b"MSH|b\r")])
        assert not one.duplicate and not two.duplicate
        assert one.message_id != two.message_id
        stored = store.get_message(changed.message_id)
        assert stored is not None and stored.raw == b"MSH|corrected\r"

    def test_a_group_is_stored_with_raw_bytes_exactly(self, store: SqlStore) -> None:
        """Each record of a group gets its own id, status and the raw bytes unchanged."""
        raws = [b"MSH|a\rPID|1\r", b"MSH|100% ? 'q' \x00\xff\r", b"MSH|\xe9\r"]
        outcomes = store.journal([_record(f"G{i}", raw=r) for i, r in enumerate(raws)])
        assert len({o.message_id for o in outcomes}) == 3
        assert not any(o.duplicate for o in outcomes)
        for outcome, raw in zip(outcomes, raws, strict=True):
            stored = store.get_message(outcome.message_id)
            assert stored is not None
            assert stored.raw == raw
            assert stored.status == RECEIVED
            assert stored.meta == {"port": 1}
            assert [e.status for e in store.events_for("message", outcome.message_id)] \
                == [RECEIVED]

    def test_a_resend_within_the_window_points_at_the_original(self, store: SqlStore) -> None:
        """A resent sender + control id, in a later group or the same one, is not stored
        again: its outcome is the original's id with duplicate=True."""
        [first] = store.journal([_record("D1")])
        again = store.journal([_record("D1"), _record("D2"), _record("D2")])
        assert (again[0].message_id, again[0].duplicate) == (first.message_id, True)
        assert not again[1].duplicate
        assert (again[2].message_id, again[2].duplicate) == (again[1].message_id, True)
        assert len(store.search_messages(channel="ehr")) == 2

    def test_other_sender_or_no_window_is_not_a_duplicate(self, store: SqlStore) -> None:
        """The same control id from another sender, or on a channel with window 0, is new."""
        [first] = store.journal([_record("X1")])
        other, no_window = store.journal([_record("X1", sender="OTHER^FAC"),
                                          _record("X1", window=0)])
        assert not other.duplicate and other.message_id != first.message_id
        assert not no_window.duplicate and no_window.message_id != first.message_id

    def test_error_records_are_never_deduplicated(self, store: SqlStore) -> None:
        """ERROR records are all kept, and a resend after an ERROR is stored anew."""
        errors = store.journal([_record("E1", status=ERROR), _record("E1", status=ERROR)])
        assert not any(o.duplicate for o in errors)
        assert errors[0].message_id != errors[1].message_id
        [fixed] = store.journal([_record("E1")])
        assert not fixed.duplicate
        assert fixed.message_id not in {o.message_id for o in errors}

    def test_two_nodes_journaling_one_resend_store_it_once(
            self, make_store: StoreFactory) -> None:
        """The same message journaled at once through several store instances is stored
        once; every other outcome is a duplicate of it."""
        stores = [make_store() for _ in range(4)]
        barrier = threading.Barrier(4)
        outcomes: list[Any] = [None] * 4

        def work(i: int) -> None:
            barrier.wait()
            [outcomes[i]] = stores[i].journal([_record("RACE")])

        _in_threads(4, work)
        originals = [o for o in outcomes if not o.duplicate]
        assert len(originals) == 1
        assert {o.message_id for o in outcomes} == {originals[0].message_id}


class TestClaimMessages:
    def test_claims_oldest_first_and_leases_them(self, store: SqlStore) -> None:
        """A claim takes up to `limit` RECEIVED messages oldest first; another owner then
        gets only the rest."""
        ids = _journal(store, 5)
        first = store.claim_messages("a", 3, lease_seconds=60)
        assert [m.id for m in first] == ids[:3]
        second = store.claim_messages("b", 10, lease_seconds=60)
        assert [m.id for m in second] == ids[3:]
        assert store.claim_messages("c", 10, lease_seconds=60) == []

    def test_an_expired_lease_makes_the_message_claimable(self, store: SqlStore) -> None:
        """When a lease runs out (its node died) another owner can claim the message."""
        [mid] = _journal(store, 1)
        assert [m.id for m in store.claim_messages("a", 1, lease_seconds=0.2)] == [mid]
        reclaimed = _wait_for(lambda: store.claim_messages("b", 1, lease_seconds=60))
        assert [m.id for m in reclaimed] == [mid]

    def test_released_leases_are_claimable_again(self, store: SqlStore) -> None:
        """release_leases(owner) and release_message_lease give claimed work back."""
        ids = _journal(store, 3)
        store.claim_messages("node-1:process", 3, lease_seconds=600)
        store.release_leases("node-1:process")
        assert [m.id for m in store.claim_messages("b", 2, lease_seconds=600)] == ids[:2]
        store.release_message_lease(ids[0])
        assert [m.id for m in store.claim_messages("c", 5, lease_seconds=600)] \
            == [ids[0], ids[2]]

    def test_only_received_messages_are_claimed(self, store: SqlStore) -> None:
        """ERROR and completed messages are never claimed."""
        [err] = [o.message_id for o in store.journal([_record("E", status=ERROR)])]
        [done, todo] = _journal(store, 2)
        store.claim_messages("a", 1, lease_seconds=60)
        store.complete_message(_outcome(done))
        assert [m.id for m in store.claim_messages("b", 10, lease_seconds=60)] == [todo]
        assert err not in (done, todo)

    def test_concurrent_claimers_never_share_a_message(self, make_store: StoreFactory) -> None:
        """Six claimers (two store instances, three threads each) claiming in small
        batches take every message exactly once."""
        stores = [make_store(), make_store()]
        ids = []
        for _ in range(4):
            ids += [o.message_id for o in stores[0].journal(
                [_record(None, raw=f"MSH|{i}".encode()) for i in range(50)])]
        taken: list[list[int]] = [[] for _ in range(6)]

        def work(i: int) -> None:
            store = stores[i % 2]
            while True:
                got = store.claim_messages(f"n{i}:process", 7, lease_seconds=600)
                if not got:
                    return
                taken[i].extend(m.id for m in got)

        _in_threads(6, work)
        every = [mid for batch in taken for mid in batch]
        assert len(every) == len(set(every)) == 200
        assert sorted(every) == sorted(ids)


class TestReprocessAfterFailure:
    def test_failed_charge_is_delivered_again_after_reprocessing(self, store: SqlStore) -> None:
        """Reprocessing a message whose charge FAILED queues its delivery again; a delivery
        a credit cancelled stays FAILED; a partly sent charge is not rewritten."""
        [mid] = _journal(store, 1)
        store.complete_message(_outcome(mid, _queued("ch_f", "d1"), _queued("ch_c", "d1"),
                                        _queued("ch_p", "d1", "d2")))
        rows = {(r.charge_id, r.destination): r.id
                for d in ("d1", "d2") for r in store.claim_deliveries(d, "n", 10, 60)}
        store.finish_deliveries([
            DeliveryUpdate(rows[("ch_f", "d1")], FAILED, "claim data error"),
            DeliveryUpdate(rows[("ch_c", "d1")], FAILED, "cancelled by credit x before it"),
            DeliveryUpdate(rows[("ch_p", "d1")], SENT),
            DeliveryUpdate(rows[("ch_p", "d2")], FAILED, "400")])
        assert store.requeue_message(mid, "op")
        store.complete_message(_outcome(mid, _queued("ch_f", "d1"), _queued("ch_c", "d1"),
                                        _queued("ch_p", "d1", "d2", amount="1.00")))
        statuses = {(d["destination"], d["status"]) for d in store.deliveries_for_charge("ch_f")}
        assert statuses == {("d1", QUEUED)}
        assert [d["status"] for d in store.deliveries_for_charge("ch_c")] == [FAILED]
        found = store.get_charge("ch_p")
        assert found is not None and str(found[0].amount) == "125.00"

class TestCompleteMessage:
    def test_processor_that_lost_its_lease_stores_nothing(self, store: SqlStore) -> None:
        """Once a lease expired and another owner claimed the message, the first owner's
        outcome is refused; the new owner's is stored."""
        [mid] = _journal(store, 1)
        store.claim_messages("a", 1, lease_seconds=0.05)
        time.sleep(0.1)
        assert [m.id for m in store.claim_messages("b", 1, lease_seconds=600)] == [mid]
        assert store.complete_message(_outcome(mid, _queued("ch_late")), "a") is False
        assert store.get_charge("ch_late") is None
        assert store.complete_message(_outcome(mid, _queued("ch_new")), "b") is True
        assert store.get_charge("ch_new") is not None

    def test_stores_charges_deliveries_and_events_at_once(self, store: SqlStore) -> None:
        """Completing a message stores its status, each charge, one delivery per
        destination and the events, and ends the message's lease."""
        [mid] = _journal(store, 1)
        store.claim_messages("a", 1, lease_seconds=600)
        held = ChargeRecord(_charge("ch_held"), HELD,
                            [Finding(rule="npi", severity="hold", message="NPI missing")],
                            ["d1"], "dup-held")
        store.complete_message(_outcome(mid, _queued("ch_1", "d1", "d2"), held), "a")
        message = store.get_message(mid)
        assert message is not None
        assert (message.status, message.mrn, message.counts) == (PROCESSED, "MRN1",
                                                                 {"charges": 2})
        charges = {c.charge_id: (s, f) for c, s, f in store.charges_for_message(mid)}
        assert charges["ch_1"] == (QUEUED, [])
        assert charges["ch_held"][0] == HELD and charges["ch_held"][1][0].rule == "npi"
        assert [(d["destination"], d["status"]) for d in store.deliveries_for_charge("ch_1")] \
            == [("d1", QUEUED), ("d2", QUEUED)]
        assert store.deliveries_for_charge("ch_held") == []
        assert [e.status for e in store.events_for("message", mid)] == [RECEIVED, PROCESSED]
        assert [e.reason for e in store.events_for("charge", "ch_held")] == ["NPI missing"]
        found = store.get_charge("ch_1")
        assert found is not None and found[0].amount == Decimal("125.00") and found[3] == mid
        assert store.claim_messages("b", 1, lease_seconds=600) == []

    def test_reprocessing_upserts_and_queues_deliveries_once(self, store: SqlStore) -> None:
        """Completing the same message twice keeps one charge per id and one delivery per
        destination; a HELD charge is rewritten with the new decision."""
        [mid] = _journal(store, 1)
        held = ChargeRecord(_charge("ch_h", "1.00"), HELD, [], ["d1"], "k")
        store.complete_message(_outcome(mid, _queued("ch_q"), held))
        store.requeue_message(mid, "tester")
        store.complete_message(_outcome(mid, _queued("ch_q"),
                                        ChargeRecord(_charge("ch_h", "2.00"), QUEUED, [],
                                                     ["d1"], "k")))
        assert sorted(c.charge_id for c, _, _ in store.charges_for_message(mid)) \
            == ["ch_h", "ch_q"]
        found = store.get_charge("ch_h")
        assert found is not None and (found[0].amount, found[1]) == (Decimal("2.00"), QUEUED)
        assert len(store.deliveries_for_charge("ch_q")) == 1
        assert len(store.deliveries_for_charge("ch_h")) == 1

    def test_a_sent_charge_is_never_rewritten(self, store: SqlStore) -> None:
        """A charge already SENT keeps its data and status when its message is redone."""
        [mid] = _journal(store, 1)
        store.complete_message(_outcome(mid, _queued("ch_s")))
        [row] = store.claim_deliveries("d1", "a", 10, lease_seconds=60)
        store.finish_deliveries([DeliveryUpdate(row.id, SENT, "ok")])
        store.complete_message(_outcome(mid, _queued("ch_s", amount="999.00")))
        found = store.get_charge("ch_s")
        assert found is not None and (found[0].amount, found[1]) == (Decimal("125.00"), SENT)
        assert len(store.deliveries_for_charge("ch_s")) == 1

    def test_duplicate_exists_ignores_the_same_message(self, store: SqlStore) -> None:
        """duplicate_exists sees a key from another message, not from the asking one."""
        first, second = _journal(store, 2)
        store.complete_message(_outcome(first, _queued("ch_a")))
        since = time.time() - 60
        assert store.duplicate_exists("dup-ch_a", second, since)
        assert not store.duplicate_exists("dup-ch_a", first, since)
        assert not store.duplicate_exists("dup-ch_a", second, time.time() + 60)
        assert not store.duplicate_exists("dup-other", second, since)

    def test_existing_duplicates_answers_for_several_keys_at_once(self, store: SqlStore
                                                                   ) -> None:
        first, second = _journal(store, 2)
        store.complete_message(_outcome(first, _queued("ch_a"), _queued("ch_b")))
        since = time.time() - 60
        keys = ["dup-ch_a", "dup-ch_b", "dup-other"]
        assert store.existing_duplicates(keys, second, since) == {"dup-ch_a", "dup-ch_b"}
        assert store.existing_duplicates(keys, first, since) == set()
        assert store.existing_duplicates([], second, since) == set()


class TestDeliveries:
    def _queue(self, store: SqlStore, *charge_ids: str, destinations: tuple[str, ...] = ("d1",)
               ) -> None:
        [mid] = [o.message_id for o in store.journal([_record(None)])]
        store.complete_message(_outcome(mid, *(_queued(c, *destinations) for c in charge_ids)))

    def test_claims_due_deliveries_of_one_destination_under_lease(self, store: SqlStore) -> None:
        """claim_deliveries returns queued deliveries of that destination with their charge,
        oldest first, and a second owner does not get leased ones."""
        self._queue(store, "ch_1", "ch_2", "ch_3", destinations=("d1", "d2"))
        assert store.pending_deliveries("d1")[0] == 3
        rows = store.claim_deliveries("d1", "a", 2, lease_seconds=60)
        assert [r.charge_id for r in rows] == ["ch_1", "ch_2"]
        assert all(r.destination == "d1" and r.status == QUEUED for r in rows)
        assert rows[0].charge.amount == Decimal("125.00")
        assert [r.charge_id for r in store.claim_deliveries("d1", "b", 5, 60)] == ["ch_3"]
        assert len(store.claim_deliveries("d2", "b", 5, 60)) == 3
        assert store.claim_deliveries("d1", "c", 5, 60) == []

    def test_a_batch_id_survives_an_expired_lease(self, store: SqlStore) -> None:
        """assign_batch records one new batch id; after the lease expires the same
        deliveries come back carrying it (so a destination can recognise finished work)."""
        self._queue(store, "ch_1", "ch_2")
        rows = store.claim_deliveries("d1", "a", 10, lease_seconds=0.2)
        batch = store.assign_batch([r.id for r in rows])
        assert store.assign_batch([]) != batch
        again = _wait_for(lambda: store.claim_deliveries("d1", "b", 10, lease_seconds=60))
        assert [(r.id, r.batch_id) for r in again] == [(r.id, batch) for r in rows]

    def test_sent_everywhere_rolls_the_charge_up_to_sent(self, store: SqlStore) -> None:
        """A charge becomes SENT only when every destination's delivery is SENT."""
        self._queue(store, "ch_1", destinations=("d1", "d2"))
        [r1] = store.claim_deliveries("d1", "a", 10, 60)
        store.finish_deliveries([DeliveryUpdate(r1.id, SENT, "ok", result={"file": "f1"})])
        found = store.get_charge("ch_1")
        assert found is not None and found[1] == QUEUED
        [r2] = store.claim_deliveries("d2", "a", 10, 60)
        store.finish_deliveries([DeliveryUpdate(r2.id, SENT, "ok", response="201")])
        found = store.get_charge("ch_1")
        assert found is not None and found[1] == SENT
        assert [e.status for e in store.events_for("charge", "ch_1")] == [QUEUED, SENT]
        assert store.pending_deliveries("d1") == (0, None)

    def test_a_failed_delivery_fails_the_charge(self, store: SqlStore) -> None:
        """One FAILED (dead-lettered) delivery makes its charge FAILED."""
        self._queue(store, "ch_1", destinations=("d1", "d2"))
        [r1] = store.claim_deliveries("d1", "a", 10, 60)
        store.finish_deliveries([DeliveryUpdate(r1.id, FAILED, "rejected")])
        found = store.get_charge("ch_1")
        assert found is not None and found[1] == FAILED
        [d1, _] = store.deliveries_for_charge("ch_1")
        assert (d1["status"], d1["detail"], d1["attempts"]) == (FAILED, "rejected", 1)

    def test_a_retry_requeues_for_later_without_its_batch(self, store: SqlStore) -> None:
        """A retry puts the delivery back QUEUED, due at next_attempt_at, batch forgotten,
        attempts counted, and the charge stays QUEUED."""
        self._queue(store, "ch_1")
        [row] = store.claim_deliveries("d1", "a", 10, 600)
        store.assign_batch([row.id])
        store.finish_deliveries([DeliveryUpdate(row.id, QUEUED, "timeout",
                                                next_attempt_at=time.time() + 0.5)])
        assert store.claim_deliveries("d1", "b", 10, 600) == []
        [again] = _wait_for(lambda: store.claim_deliveries("d1", "b", 10, 600))
        assert (again.id, again.attempts, again.batch_id) == (row.id, 1, None)
        found = store.get_charge("ch_1")
        assert found is not None and found[1] == QUEUED

    def test_concurrent_delivery_claimers_never_share_a_row(
            self, make_store: StoreFactory) -> None:
        """Four claimers on two store instances take every delivery exactly once."""
        stores = [make_store(), make_store()]
        self._queue(stores[0], *[f"ch_{i}" for i in range(60)])
        taken: list[list[int]] = [[] for _ in range(4)]

        def work(i: int) -> None:
            while True:
                got = stores[i % 2].claim_deliveries("d1", f"n{i}", 4, lease_seconds=600)
                if not got:
                    return
                taken[i].extend(r.id for r in got)

        _in_threads(4, work)
        every = [d for batch in taken for d in batch]
        assert len(every) == len(set(every)) == 60


class TestOperatorActions:
    def test_release_sends_a_held_charge_on(self, store: SqlStore) -> None:
        """release_charge queues a HELD charge to its destinations once; a charge that is
        not HELD is refused."""
        [mid] = _journal(store, 1)
        store.complete_message(_outcome(mid, ChargeRecord(_charge("ch_h"), HELD, [], [], "k")))
        assert store.release_charge("ch_h", ["d1", "d2"], "alice")
        found = store.get_charge("ch_h")
        assert found is not None and found[1] == QUEUED
        assert [d["destination"] for d in store.deliveries_for_charge("ch_h")] == ["d1", "d2"]
        assert store.events_for("charge", "ch_h")[-1].reason == "released by alice"
        assert not store.release_charge("ch_h", ["d1"], "alice")
        assert not store.release_charge("ch_missing", ["d1"], "alice")

    def test_requeue_puts_a_message_back_to_received(self, store: SqlStore) -> None:
        """requeue_message makes a finished message claimable again; unknown ids say no."""
        [mid] = _journal(store, 1)
        store.complete_message(_outcome(mid, status=ERROR))
        assert store.requeue_message(mid, "bob")
        message = store.get_message(mid)
        assert message is not None and (message.status, message.reason) == (RECEIVED, None)
        assert [m.id for m in store.claim_messages("a", 5, 60)] == [mid]
        assert not store.requeue_message(mid + 1000, "bob")


class TestReads:
    def test_search_filters_each_column(self, store: SqlStore) -> None:
        """Each search filter narrows by its column; results are newest first."""
        a = store.journal([_record("S1", channel="one")])[0].message_id
        b = store.journal([_record("S2", channel="two", message_type="ADT^A08")])[0].message_id
        c = store.journal([_record("S3", channel="one", status=ERROR)])[0].message_id
        store.complete_message(_outcome(a))  # sets mrn MRN1
        assert [m.id for m in store.search_messages()] == [c, b, a]
        assert [m.id for m in store.search_messages(channel="one")] == [c, a]
        assert [m.id for m in store.search_messages(status=ERROR)] == [c]
        assert [m.id for m in store.search_messages(control_id="S2")] == [b]
        assert [m.id for m in store.search_messages(message_type="ADT^A08")] == [b]
        assert [m.id for m in store.search_messages(mrn="MRN1")] == [a]
        now = time.time()
        assert len(store.search_messages(since=now - 60, until=now + 60)) == 3
        assert store.search_messages(since=now + 60) == []
        assert store.search_messages(until=now - 60) == []
        assert store.count_by_status() == {PROCESSED: 1, RECEIVED: 1, ERROR: 1}

    def test_keyset_pages_cover_everything_once(self, store: SqlStore) -> None:
        """Paging with before_id walks every message newest first without overlap."""
        ids = _journal(store, 23, window=0)
        seen: list[int] = []
        before = None
        while True:
            page = store.search_messages(before_id=before, limit=5)
            if not page:
                break
            seen += [m.id for m in page]
            before = page[-1].id
        assert seen == sorted(ids, reverse=True)


class TestCounters:
    def test_counters_count_up_per_name_and_survive_reopening(
            self, make_store: StoreFactory) -> None:
        """Each counter name counts on its own, and a reopened store continues it."""
        first = make_store()
        assert [first.next_counter("isa:x") for _ in range(3)] == [1, 2, 3]
        assert first.next_counter("gs:x") == 1
        assert first.next_counter("Weird name/%?'") == 1
        assert make_store().next_counter("isa:x") == 4

    def test_concurrent_counters_never_repeat(self, make_store: StoreFactory) -> None:
        """Eight threads on two store instances draw 400 distinct values from one counter."""
        stores = [make_store(), make_store()]
        drawn: list[list[int]] = [[] for _ in range(8)]

        def work(i: int) -> None:
            drawn[i] = [stores[i % 2].next_counter("isa13") for _ in range(50)]

        _in_threads(8, work)
        every = [v for values in drawn for v in values]
        assert len(set(every)) == 400
        assert min(every) >= 1


class TestBatchLock:
    def test_one_holder_at_a_time_per_destination(self, backend: str,
                                                  make_store: StoreFactory) -> None:
        """On PostgreSQL a second node is refused a destination's batch lock while it is
        held and gets it after release; SQLite (one node) always grants it."""
        one, two = make_store(), make_store()
        with one.batch_lock("claims_837p") as held:
            assert held
            with two.batch_lock("claims_837p") as other:
                assert other is (backend == "sqlite")
            with two.batch_lock("pm_api") as different:
                assert different
        with two.batch_lock("claims_837p") as after:
            assert after
