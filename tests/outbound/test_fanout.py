"""Fan-out: one channel, several destinations, each with its own filter and its own
tracked delivery."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from channels.json_file import JsonFileDestination, JsonFileSettings
from channels.pm_api import PmApiDestination, PmApiSettings
from engine.pipeline.delivery import DeliveryRunner, StoreContext
from engine.pmsim import PmSim
from engine.store.sqlite import SqliteStore
from tests.outbound.conftest import (
    BCBS,
    MEDICARE,
    all_done,
    control,
    deliveries,
    drive,
    make_charge,
    queue,
    stats,
)


@pytest.fixture
def pair(sim: PmSim, context: StoreContext) -> Iterator[tuple[JsonFileDestination,
                                                            PmApiDestination]]:
    """Medicare charges to a claim-file destination, everyone else to the PM API."""
    medicare = {"payer_names_matching": "(?i)medicare"}
    files = JsonFileDestination("medicare_files", JsonFileSettings.model_validate(
        {"batch_seconds": 0, "filter": medicare}), context)
    api = PmApiDestination("pm", PmApiSettings.model_validate(
        {"base_url": sim.url, "retry_base_seconds": 0.05,
         "filter": {"exclude_payer_names_matching": medicare["payer_names_matching"]}}),
        context)
    yield files, api
    api.close()


def _file_charge_ids(directory: Path) -> list[str]:
    return [json.loads(line)["charge_id"] for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_text().splitlines()]


class TestFanOut:
    def test_medicare_to_files_everyone_else_to_the_pm_api(
            self, sim: PmSim, store: SqliteStore, context: StoreContext,
            pair: tuple[JsonFileDestination, PmApiDestination]) -> None:
        """Each charge reaches exactly the destination whose filter accepts it."""
        files, api = pair
        medicare = [make_charge(n, payer=MEDICARE) for n in range(3)]
        others = [make_charge(n, payer=BCBS) for n in range(3, 6)]
        queue(store, [*medicare, *others], [files, api])
        drive(DeliveryRunner(store, [files, api]), lambda: all_done(store))
        assert sorted(stats(sim)["charge_ids"]) == sorted(c.charge_id for c in others)
        assert _file_charge_ids(files.directory) == [c.charge_id for c in medicare]
        assert {(d["destination"], d["status"]) for d in deliveries(store)} == {
            ("medicare_files", "SENT"), ("pm", "SENT")}

    def test_each_destination_is_tracked_on_its_own(
            self, sim: PmSim, store: SqliteStore, context: StoreContext) -> None:
        """A charge going to two destinations has two deliveries; one failing does not
        resend or hold the other, and resending to one leaves the other alone."""
        files = JsonFileDestination("files", JsonFileSettings(batch_seconds=0), context)
        api = PmApiDestination("pm", PmApiSettings(base_url=sim.url, max_attempts=1), context)
        try:
            control(sim, script=[{"status": 400, "body": {"error": "payer not enrolled"}}])
            charge = make_charge(9)
            queue(store, [charge], [files, api])
            runner = DeliveryRunner(store, [files, api])
            drive(runner, lambda: all_done(store))
            assert {d["destination"]: d["status"] for d in deliveries(store)} == {
                "files": "SENT", "pm": "FAILED"}
            # An operator resends the PM delivery (back to QUEUED); only it goes again.
            with store.transaction() as cur:
                cur.execute("UPDATE deliveries SET status = 'QUEUED' WHERE destination = 'pm'")
            drive(runner, lambda: all_done(store))
            assert {d["destination"]: d["status"] for d in deliveries(store)} == {
                "files": "SENT", "pm": "SENT"}
            assert _file_charge_ids(files.directory) == [charge.charge_id]
            assert stats(sim)["charge_ids"] == [charge.charge_id]
        finally:
            api.close()
