"""Flush requests: recorded in the store by one process, taken by the delivery runner."""

from __future__ import annotations

from pathlib import Path

from engine.pipeline.flush import pending_flush_requests, request_flush
from tests.engine_process import wait_for
from tests.x12_destination.conftest import DESTINATION, Rig, make_charge


class TestFlushRequest:
    def test_flush_writes_a_waiting_batch_at_once(self, tmp_path: Path) -> None:
        """With batch_seconds large the runner waits; a flush request makes it write the
        pending batch on its next pass and marks the request taken."""
        rig = Rig(tmp_path, batch_seconds=3600, batch_max=500)
        rig.process([make_charge(1), make_charge(2, procedure={"code": "93000"})])
        assert rig.runner.run_once() == 0 and rig.files() == []
        ids = request_flush(rig.store, [DESTINATION], who="test")
        assert pending_flush_requests(rig.store, ids) == 1
        assert wait_for(rig.runner.run_once, what="the flushed batch") == 2
        assert len(rig.files()) == 1
        assert pending_flush_requests(rig.store, ids) == 0

    def test_batch_max_writes_without_waiting(self, tmp_path: Path) -> None:
        """Once batch_max charges wait, a file is written even though batch_seconds has
        not passed, and it holds at most batch_max charges."""
        rig = Rig(tmp_path, batch_seconds=3600, batch_max=2)
        rig.process([make_charge(n, procedure={"code": c}) for n, c in
                     ((1, "99213"), (2, "93000"), (3, "36415"))])
        assert rig.runner.run_once() == 2
        assert len(rig.files()) == 1
        assert rig.runner.run_once() == 0  # one left: waits for its time or a flush
