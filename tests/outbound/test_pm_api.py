"""The pm_api destination against the real pm-sim, a real SQLite store and DeliveryRunner."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pydantic
import pytest

from channels.pm_api import PmApiDestination, PmApiError, PmApiSettings
from engine.connectors import QueuedDelivery
from engine.pipeline.delivery import DeliveryRunner, StoreContext
from engine.pmsim import PmSim, SimSettings
from engine.store.sqlite import SqliteStore
from tests.outbound.conftest import (
    all_done,
    control,
    deliveries,
    drive,
    make_charge,
    queue,
    stats,
)

MakePmApi = Callable[..., PmApiDestination]


@pytest.fixture
def make_pm_api(sim: PmSim, context: StoreContext) -> Iterator[MakePmApi]:
    """Builds pm_api destinations pointed at the sim with test-sized retry delays."""
    built: list[PmApiDestination] = []

    def factory(name: str = "pm", **overrides: Any) -> PmApiDestination:
        settings = PmApiSettings.model_validate({
            "base_url": sim.url, "retry_base_seconds": 0.05, "retry_max_seconds": 0.2,
            "timeout_seconds": 10, "breaker_cooldown_seconds": 0.3, **overrides})
        destination = PmApiDestination(name, settings, context)
        built.append(destination)
        return destination

    yield factory
    for destination in built:
        destination.close()


class TestRetries:
    def test_503_twice_then_201_is_delivered_once(self, sim: PmSim, store: SqliteStore,
                                                   make_pm_api: MakePmApi) -> None:
        """Two 503s then a 201: the charge is SENT after 3 attempts and stored once."""
        control(sim, script=[503, 503, 201])
        destination = make_pm_api()
        charge = make_charge(1)
        queue(store, [charge], [destination])
        drive(DeliveryRunner(store, [destination]), lambda: all_done(store))
        [row] = deliveries(store)
        assert (row["status"], row["attempts"]) == ("SENT", 3)
        counts = stats(sim)
        assert counts["charges"] == 1
        assert counts["received"] == 3
        assert counts["duplicates"] == 0
        assert counts["charge_ids"] == [charge.charge_id]

    def test_server_down_then_back_delivers_everything_once(
            self, sim: PmSim, store: SqliteStore, make_pm_api: MakePmApi) -> None:
        """While the PM drops every call nothing is lost; once it is back each charge
        arrives exactly once."""
        control(sim, down=True)
        destination = make_pm_api(breaker_failures=3)
        charges = [make_charge(n) for n in range(20)]
        queue(store, charges, [destination])
        runner = DeliveryRunner(store, [destination])
        drive(runner, lambda: stats(sim)["received"] >= 10, what="calls while down")
        assert all(d["status"] == "QUEUED" for d in deliveries(store))
        control(sim, down=False)
        drive(runner, lambda: all_done(store))
        assert {d["status"] for d in deliveries(store)} == {"SENT"}
        counts = stats(sim)
        assert sorted(counts["charge_ids"]) == sorted(c.charge_id for c in charges)
        assert counts["duplicate_charges"] == 0

    def test_lost_response_is_not_billed_twice(self, sim: PmSim, store: SqliteStore,
                                               make_pm_api: MakePmApi) -> None:
        """The PM commits but the response is lost; the retry with the same
        Idempotency-Key gets the first answer back and no second charge is made."""
        control(sim, script=[{"status": 201, "drop": True}])
        destination = make_pm_api()
        charge = make_charge(2)
        queue(store, [charge], [destination])
        drive(DeliveryRunner(store, [destination]), lambda: all_done(store))
        [row] = deliveries(store)
        assert (row["status"], row["attempts"]) == ("SENT", 2)
        assert '"pm_id": "pm-000001"' in row["result"]
        counts = stats(sim)
        assert (counts["charges"], counts["duplicates"]) == (1, 1)
        assert counts["keys"] == [charge.charge_id]

    def test_retry_after_is_honoured(self, sim: PmSim, store: SqliteStore,
                                     make_pm_api: MakePmApi) -> None:
        """A 429 with Retry-After: 7 schedules the retry 7 seconds out, not by backoff."""
        control(sim, script=[{"status": 429, "retry_after": 7}])
        destination = make_pm_api()
        charge = make_charge(3)
        [outcome] = destination.deliver_batch([QueuedDelivery(1, charge.charge_id, charge)], 1)
        assert outcome.status == "RETRY"
        assert outcome.retry_after_seconds == 7.0
        assert "HTTP 429" in outcome.detail

    def test_retry_after_reaches_the_queue(self, sim: PmSim, store: SqliteStore,
                                           make_pm_api: MakePmApi) -> None:
        """The runner stores the Retry-After delay as the delivery's next attempt time."""
        control(sim, script=[{"status": 503, "retry_after": 120}])
        destination = make_pm_api()
        queue(store, [make_charge(4)], [destination])
        before = time.time()
        DeliveryRunner(store, [destination]).run_once()
        [[next_attempt_at]] = store._query("SELECT next_attempt_at FROM deliveries")
        assert before + 110 < next_attempt_at < time.time() + 130

    def test_max_attempts_dead_letters(self, sim: PmSim, store: SqliteStore,
                                       make_pm_api: MakePmApi) -> None:
        """A charge that keeps getting 503 goes FAILED after max_attempts calls."""
        control(sim, script=[503, 503, 503, 503])
        destination = make_pm_api(max_attempts=2)
        queue(store, [make_charge(5)], [destination])
        drive(DeliveryRunner(store, [destination]), lambda: all_done(store))
        [row] = deliveries(store)
        assert (row["status"], row["attempts"]) == ("FAILED", 2)
        assert "gave up after 2 attempts" in row["detail"]
        assert stats(sim)["received"] == 2


class TestRejections:
    def test_400_goes_failed_with_body_kept(self, sim: PmSim, store: SqliteStore,
                                            make_pm_api: MakePmApi) -> None:
        """A 400 is not retried: the delivery is FAILED and the PM's answer kept."""
        control(sim, script=[{"status": 400, "body": {"error": "unknown CPT 99999"}}])
        destination = make_pm_api()
        charge = make_charge(6)
        queue(store, [charge], [destination])
        drive(DeliveryRunner(store, [destination]), lambda: all_done(store))
        [row] = deliveries(store)
        assert (row["status"], row["attempts"]) == ("FAILED", 1)
        assert "unknown CPT 99999" in row["response"]
        assert "HTTP 400" in row["detail"]
        assert store.get_charge(charge.charge_id)[1] == "FAILED"  # type: ignore[index]

    def test_one_failing_charge_does_not_block_the_others(
            self, sim: PmSim, store: SqliteStore, make_pm_api: MakePmApi) -> None:
        """The first charge is rejected; the ones queued behind it are still SENT."""
        control(sim, script=[422])
        destination = make_pm_api(concurrency=1)
        charges = [make_charge(n) for n in (7, 8, 9)]
        queue(store, charges, [destination])
        drive(DeliveryRunner(store, [destination]), lambda: all_done(store))
        assert [d["status"] for d in deliveries(store)] == ["FAILED", "SENT", "SENT"]
        assert stats(sim)["charge_ids"] == [c.charge_id for c in charges[1:]]


class TestConcurrencyAndBreaker:
    def test_concurrency_limit_is_respected(self, sim: PmSim, store: SqliteStore,
                                            make_pm_api: MakePmApi) -> None:
        """With concurrency 3 the PM never sees more than 3 calls at once (and does see
        calls in parallel)."""
        control(sim, latency_ms=100)
        destination = make_pm_api(concurrency=3)
        queue(store, [make_charge(n) for n in range(12)], [destination])
        drive(DeliveryRunner(store, [destination]), lambda: all_done(store))
        counts = stats(sim)
        assert counts["charges"] == 12
        assert 2 <= counts["max_concurrent"] <= 3

    def test_breaker_opens_then_probes_before_resuming(
            self, sim: PmSim, store: SqliteStore, make_pm_api: MakePmApi) -> None:
        """After 3 consecutive failures the destination pauses; after the cool-down one
        probe goes out; a failed probe pauses again, a good one resumes delivery."""
        control(sim, down=True)
        destination = make_pm_api(breaker_failures=3, breaker_cooldown_seconds=0.5,
                                  concurrency=1)
        queue(store, [make_charge(n) for n in range(5)], [destination])
        runner = DeliveryRunner(store, [destination])
        runner.run_once()
        assert stats(sim)["received"] == 3  # the last two were held back, not called
        assert destination.breaker.state == "open"
        assert not destination.due(5, 0.0, False)

        _wait_for(lambda: destination.breaker.remaining_seconds() == 0.0)
        _wait_for(lambda: runner.run_once() > 0)  # the probe, once a delivery is due
        assert stats(sim)["received"] == 4  # exactly one probe
        assert destination.breaker.state == "open"

        control(sim, down=False)
        _wait_for(lambda: destination.breaker.remaining_seconds() == 0.0)
        _wait_for(lambda: runner.run_once() > 0)
        assert stats(sim)["received"] == 5
        assert destination.breaker.state == "closed"
        drive(runner, lambda: all_done(store))
        assert stats(sim)["charges"] == 5


class TestOrderingAndCorrections:
    def test_credit_never_overtakes_its_charge(self, sim: PmSim, store: SqliteStore,
                                               make_pm_api: MakePmApi) -> None:
        """While the encounter's charge waits out a 3 s Retry-After, its credit keeps
        waiting too; the PM receives charge then credit."""
        control(sim, script=[{"status": 503, "retry_after": 3}])
        destination = make_pm_api()
        charge = make_charge(10, encounter="V555", mrn="MRN4471")
        credit = make_charge(11, encounter="V555", mrn="MRN4471", transaction_type="credit",
                             amount="-165.00")
        queue(store, [charge, credit], [destination])
        runner = DeliveryRunner(store, [destination])
        runner.run_once()
        first, second = deliveries(store)
        assert "HTTP 503" in first["detail"]
        assert "waiting for an earlier charge" in second["detail"]
        # The credit comes due alone, well before the charge: it must keep waiting.
        drive(runner, lambda: deliveries(store)[1]["attempts"] >= 2, what="credit retries")
        assert stats(sim)["charge_ids"] == []
        drive(runner, lambda: all_done(store))
        counts = stats(sim)
        assert counts["charge_ids"] == [charge.charge_id, credit.charge_id]
        assert counts["order_violations"] == 0

    def test_void_correction_uses_its_own_call_and_key(
            self, sim: PmSim, store: SqliteStore, make_pm_api: MakePmApi) -> None:
        """A void of a charge already sent is POST /charges/{id}/void with the key
        `<charge_id>:void`, a separate delivery from the original."""
        destination = make_pm_api()
        charge = make_charge(12)
        queue(store, [charge], [destination])
        runner = DeliveryRunner(store, [destination])
        drive(runner, lambda: all_done(store))
        with store.transaction() as cur:
            store._queue_deliveries(cur, charge.charge_id, ["pm"], "void", time.time())
        drive(runner, lambda: all_done(store))
        assert [(d["kind"], d["status"]) for d in deliveries(store)] == [
            ("original", "SENT"), ("void", "SENT")]
        counts = stats(sim)
        assert counts["voids"] == 1
        assert counts["keys"] == [charge.charge_id, f"{charge.charge_id}:void"]


class TestRequestShape:
    def test_bearer_token_comes_from_the_environment(
            self, store: SqliteStore, context: StoreContext,
            monkeypatch: pytest.MonkeyPatch) -> None:
        """token_env names the variable holding the bearer token the PM requires."""
        monkeypatch.setenv("PM_API_TOKEN_TEST", "s3cret")
        with PmSim(port=0, settings=SimSettings(token="s3cret")) as secured:
            destination = PmApiDestination("pm", PmApiSettings(
                base_url=secured.url, token_env="PM_API_TOKEN_TEST"), context)
            try:
                charge = make_charge(13)
                [outcome] = destination.deliver_batch(
                    [QueuedDelivery(1, charge.charge_id, charge)], 1)
            finally:
                destination.close()
            assert outcome.status == "SENT"
            assert stats(secured)["charges"] == 1

    def test_missing_token_variable_is_a_configuration_error(
            self, context: StoreContext, monkeypatch: pytest.MonkeyPatch) -> None:
        """A token_env variable that is not set stops the destination from starting."""
        monkeypatch.delenv("PM_API_TOKEN_UNSET", raising=False)
        with pytest.raises(PmApiError, match="PM_API_TOKEN_UNSET"):
            PmApiDestination("pm", PmApiSettings(base_url="http://127.0.0.1:1",
                                                 token_env="PM_API_TOKEN_UNSET"), context)

    def test_body_template_shapes_the_request(self, sim: PmSim, store: SqliteStore,
                                              make_pm_api: MakePmApi) -> None:
        """A Jinja2 body template replaces the default charge JSON."""
        template = ('{"charge_id": {{ charge.charge_id | tojson }}, '
                    '"cpt": {{ charge.procedure.code | tojson }}, '
                    '"amount": {{ charge.amount | tojson }}, "kind": {{ kind | tojson }}}')
        destination = make_pm_api(body_template=template)
        charge = make_charge(14)
        [outcome] = destination.deliver_batch([QueuedDelivery(1, charge.charge_id, charge)], 1)
        assert outcome.status == "SENT"
        assert sim.state.charges[charge.charge_id] == {
            "charge_id": charge.charge_id, "cpt": "99214", "amount": "165.00",
            "kind": "original"}

    def test_bad_template_is_rejected_with_its_line(self) -> None:
        """A body template that does not compile fails settings validation."""
        with pytest.raises(pydantic.ValidationError, match="body_template line 2"):
            PmApiSettings(base_url="http://pm", body_template='{\n"a": {{ charge.x }\n}')

    def test_unknown_path_field_is_rejected(self) -> None:
        """A call path may only use the documented template fields."""
        with pytest.raises(pydantic.ValidationError, match="unknown field"):
            PmApiSettings.model_validate({"base_url": "http://pm",
                                          "void_call": {"path": "/c/{patient_mrn}"}})


def _wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)
