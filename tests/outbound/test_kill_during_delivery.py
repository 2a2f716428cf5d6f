"""End to end: the engine killed with SIGKILL while it calls the PM API, then restarted,
delivers every charge exactly once — the PM never bills a charge twice."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.messages import make_dft
from engine.hl7.mllp import send_messages
from engine.pmsim import PmSim, SimSettings
from engine.store.sqlite import SqliteStore
from tests.engine_process import EngineProcess, engine_config, wait_for
from tests.outbound.conftest import stats

MESSAGES = 100


@pytest.fixture
def slow_sim() -> Iterator[PmSim]:
    with PmSim(port=0, settings=SimSettings(latency_ms=50)) as server:
        yield server


def _config(tmp_path: Path, sim: PmSim) -> dict[str, object]:
    config = engine_config(tmp_path, destinations=[{
        "name": "pm", "type": "pm_api", "base_url": sim.url, "concurrency": 4,
        "batch_size": 20, "retry_base_seconds": 0.1, "retry_max_seconds": 1.0,
        "breaker_cooldown_seconds": 1.0}])
    config["channels"][0]["destinations"] = ["pm"]  # type: ignore[index]
    return config


@pytest.mark.slow
def test_sigkill_during_delivery_then_restart_bills_each_charge_once(
        tmp_path: Path, slow_sim: PmSim) -> None:
    """100 DFTs; SIGKILL mid-delivery; after a restart every charge is SENT and the PM
    holds each charge exactly once (no charge id under two keys, none missing)."""
    engine = EngineProcess(tmp_path, _config(tmp_path, slow_sim)).start()
    try:
        replies = asyncio.run(send_messages("127.0.0.1", engine.ports["ehr_dft"],
                                            [make_dft(i) for i in range(MESSAGES)]))
        assert all(b"MSA|AA|" in reply for reply in replies)
        wait_for(lambda: stats(slow_sim)["charges"] >= 30, timeout=60,
                 what="the PM to receive some charges")
        engine.signal(signal.SIGKILL)
        engine.proc.wait(30)  # type: ignore[union-attr]
        before_restart = stats(slow_sim)["charges"]

        engine.start()
        store = SqliteStore(tmp_path / "store.db")

        def finished() -> bool:
            messages = store.count_by_status("messages")
            charges = store.count_by_status("charges")
            return (messages.get("PROCESSED", 0) == MESSAGES
                    and set(charges) == {"SENT"})

        wait_for(finished, timeout=120, what="every charge SENT after the restart")
        sent = {row[0] for row in store._query("SELECT charge_id FROM charges")}
        counts = stats(slow_sim)
        assert before_restart < len(sent)  # the kill really interrupted delivery
        assert counts["duplicate_charges"] == 0
        assert len(counts["charge_ids"]) == len(set(counts["charge_ids"]))
        assert set(counts["charge_ids"]) == sent
        assert counts["order_violations"] == 0
    finally:
        engine.stop()
