"""The json_file destination: one atomic JSON-lines file per batch, idempotent per batch id."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest

from channels.json_file import JsonFileDestination, JsonFileSettings
from engine.charge import Charge
from engine.connectors import QueuedDelivery
from engine.pipeline.delivery import DeliveryRunner, StoreContext
from engine.store.sqlite import SqliteStore
from tests.outbound.conftest import all_done, deliveries, drive, make_charge, queue


def _destination(context: StoreContext, **settings: object) -> JsonFileDestination:
    return JsonFileDestination("pm_files", JsonFileSettings.model_validate(
        {"batch_seconds": 0, "fsync": True, **settings}), context)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()) if directory.exists() else []


class TestJsonFile:
    def test_a_batch_becomes_one_jsonl_file_of_charges(self, store: SqliteStore,
                                                       context: StoreContext) -> None:
        """Every charge of a batch is one JSON line of the normalized charge, in one file
        named from the batch id, with the file and line kept as the delivery result."""
        destination = _destination(context)
        charges = [make_charge(n) for n in range(5)]
        queue(store, charges, [destination])
        drive(DeliveryRunner(store, [destination]), lambda: all_done(store))
        [path] = _files(context.out_dir / "json")
        assert path.name == "pm_files-00000001.jsonl"
        lines = path.read_text().splitlines()
        assert [Charge.model_validate_json(line) for line in lines] == charges
        results = [json.loads(d["result"]) for d in deliveries(store)]
        assert results == [{"file": str(path), "line": n} for n in range(1, 6)]

    def test_redelivered_batch_is_not_written_twice(self, store: SqliteStore,
                                                    context: StoreContext) -> None:
        """A crash after the file was written but before the outcome was stored brings the
        same batch id back; the destination answers SENT and writes nothing new."""
        destination = _destination(context)
        queue(store, [make_charge(n) for n in range(3)], [destination])
        # The first try: claim, batch id recorded, file written, then the node dies.
        rows = store.claim_deliveries("pm_files", "node-1", 100, 300.0)
        batch_id = store.assign_batch([r.id for r in rows])
        destination.deliver_batch([QueuedDelivery(r.id, r.charge_id, r.charge) for r in rows],
                                  batch_id)
        [path] = _files(context.out_dir / "json")
        written = path.read_bytes()
        stamp = path.stat().st_mtime_ns
        # The restart: leases released, the runner re-delivers the same batch.
        store.release_leases("node-1")
        drive(DeliveryRunner(store, [destination], owner="node-1"), lambda: all_done(store))
        assert _files(context.out_dir / "json") == [path]
        assert path.read_bytes() == written
        assert path.stat().st_mtime_ns == stamp
        assert {d["status"] for d in deliveries(store)} == {"SENT"}
        assert "already written" in deliveries(store)[0]["detail"]

    def test_corrections_are_marked(self, context: StoreContext) -> None:
        """A void correction's line carries "correction": "void" next to the charge."""
        destination = _destination(context)
        charge = make_charge(7)
        destination.deliver_batch([QueuedDelivery(1, charge.charge_id, charge, kind="void")], 9)
        line = json.loads(destination.file_for(9).read_text())
        assert line["correction"] == "void"
        assert line["charge_id"] == charge.charge_id

    def test_unwritable_directory_retries(self, context: StoreContext, tmp_path: Path) -> None:
        """When the file cannot be written every delivery of the batch is RETRY."""
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("x")
        destination = _destination(context, directory=str(blocker / "sub"))
        charge = make_charge(8)
        [outcome] = destination.deliver_batch([QueuedDelivery(1, charge.charge_id, charge)], 3)
        assert outcome.status == "RETRY"


class TestBatching:
    def test_due_by_size_age_or_flush(self, context: StoreContext) -> None:
        """A file is due at batch_max charges, when the oldest is batch_seconds old, or on
        flush; never when nothing waits."""
        destination = _destination(context, batch_seconds=60, batch_max=10)
        assert not destination.due(9, 59.0, False)
        assert destination.due(10, 0.0, False)
        assert destination.due(1, 60.0, False)
        assert destination.due(1, 0.0, True)
        assert not destination.due(0, 999.0, True)
        assert destination.batch_size == 10

    def test_batches_wait_for_batch_seconds(self, store: SqliteStore,
                                            context: StoreContext) -> None:
        """With batch_seconds set, queued charges wait; a flush request writes them."""
        destination = _destination(context, batch_seconds=3600)
        queue(store, [make_charge(1)], [destination])
        runner = DeliveryRunner(store, [destination])
        assert runner.run_once() == 0
        runner.flush_requested.add("pm_files")
        drive(runner, lambda: all_done(store))
        assert len(_files(context.out_dir / "json")) == 1


class TestSettings:
    @pytest.mark.parametrize("pattern", ["charges.jsonl", "{destination}-{date}.jsonl",
                                         "sub/{batch_id}.jsonl"])
    def test_file_pattern_must_be_stable_per_batch(self, pattern: str) -> None:
        """A file name must use {batch_id}, only stable fields, and no directory."""
        with pytest.raises(pydantic.ValidationError, match="file_pattern"):
            JsonFileSettings(file_pattern=pattern)

    def test_relative_directory_is_under_out_dir(self, context: StoreContext,
                                                 tmp_path: Path) -> None:
        """A relative directory lands under the engine's out_dir; an absolute one stays."""
        assert _destination(context, directory="pm").directory == context.out_dir / "pm"
        assert _destination(context, directory=str(tmp_path)).directory == tmp_path


def test_temp_files_never_linger(store: SqliteStore, context: StoreContext) -> None:
    """After a batch only the final file is in the directory (no temp file left)."""
    destination = _destination(context)
    queue(store, [make_charge(n) for n in range(2)], [destination])
    drive(DeliveryRunner(store, [destination]), lambda: all_done(store))
    assert [p.name for p in _files(context.out_dir / "json")] == ["pm_files-00000001.jsonl"]
