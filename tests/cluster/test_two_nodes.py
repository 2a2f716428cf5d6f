"""Two engine nodes on one PostgreSQL schema, one SIGKILLed mid-stream: nothing
acknowledged is lost, nothing is billed twice."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from bench.messages import make_dft
from engine.cluster import cluster_view
from engine.pmsim import PmSim
from engine.store.postgres import PostgresStore
from engine.store.records import PROCESSED, SENT
from tests.engine_process import EngineProcess, engine_config, wait_for
from tests.store.pg import private_schema

MESSAGES = 240
LINES = 2
KILL_AFTER_ACKS = 60  # acknowledgements from node A before it is killed


def _node_config(tmp: Path, name: str, store_url: str, pm_url: str) -> dict[str, Any]:
    """One node's config: its own (ephemeral) ports and out dir, the shared store."""
    folder = tmp / name
    folder.mkdir()
    config = engine_config(folder, store_url=store_url, destinations=[{
        "name": "pm", "type": "pm_api", "base_url": pm_url,
        "retry_base_seconds": 0.2, "retry_max_seconds": 2.0}])
    config["channels"][0]["destinations"] = ["pm"]
    return config


class _Sender:
    """Streams DFTs over MLLP, one connection per (node, lane); a message that got no
    AA on a node that died is resent to the surviving node, as a sender would fail over."""

    def __init__(self, nodes: dict[str, EngineProcess]) -> None:
        self.nodes = nodes
        self.acked: dict[int, str] = {}  # message number -> node that acknowledged it
        self.acks_by: dict[str, int] = {name: 0 for name in nodes}

    async def lane(self, node: str, numbers: list[int], kill: Any = None) -> list[int]:
        """Send `numbers` to `node` one at a time; returns those left unacknowledged."""
        port = self.nodes[node].ports["ehr_dft"]
        left = list(numbers)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            while left:
                writer.write(b"\x0b" + make_dft(left[0], lines=LINES) + b"\x1c\r")
                await writer.drain()
                reply = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 60)
                assert b"MSA|AA|" in reply, reply
                self.acked[left.pop(0)] = node
                self.acks_by[node] += 1
                if kill is not None:
                    kill()
            writer.close()
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        return left


@pytest.mark.slow
@pytest.mark.timeout(420)
class TestTwoNodes:
    def test_sigkill_of_one_node_loses_nothing_and_bills_each_charge_once(
            self, tmp_path: Path) -> None:
        """Two nodes share one schema under a steady stream; node A is SIGKILLed mid-stream
        and its unacknowledged messages are resent to B: every message becomes its charges
        exactly once, and the PM server receives each charge exactly once."""
        with private_schema("cbcluster") as url, PmSim(port=0) as sim:
            nodes = {name: EngineProcess(tmp_path, _node_config(tmp_path, name, url, sim.url),
                                         name=name, node=name)
                     for name in ("node-a", "node-b")}
            store = PostgresStore(url)
            try:
                for node in nodes.values():
                    node.start(timeout=90)
                sender = _Sender(nodes)

                def kill_a() -> None:
                    a = nodes["node-a"]
                    if sender.acks_by["node-a"] >= KILL_AFTER_ACKS and a.proc is not None \
                            and a.proc.poll() is None:
                        a.signal(signal.SIGKILL)  # parent and its processor child

                async def stream() -> None:
                    lanes = [list(range(i, MESSAGES, 4)) for i in range(4)]
                    left = await asyncio.gather(
                        sender.lane("node-a", lanes[0], kill_a),
                        sender.lane("node-a", lanes[1], kill_a),
                        sender.lane("node-b", lanes[2]),
                        sender.lane("node-b", lanes[3]))
                    # Fail over: whatever node A never acknowledged goes to node B.
                    retry = sorted(n for lane in left for n in lane)
                    assert not await sender.lane("node-b", retry)

                asyncio.run(stream())
                assert nodes["node-a"].proc is not None
                assert nodes["node-a"].proc.wait(30) == -signal.SIGKILL
                assert KILL_AFTER_ACKS <= sender.acks_by["node-a"] < MESSAGES // 2
                assert len(sender.acked) == MESSAGES

                expected = MESSAGES * LINES
                # Node A's leases die with its heartbeat; node B finishes its work.
                try:
                    wait_for(lambda: store.count_by_status("charges").get(SENT) == expected,
                             timeout=180, what=f"{expected} charges SENT")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; {_progress(store)}") from None
                wait_for(lambda: sim.state.stats()["charges"] == expected, timeout=60,
                         what="every charge at the PM server")

                messages = {}
                for m in _all_messages(store):
                    assert m.control_id not in messages, f"{m.control_id} stored twice"
                    messages[m.control_id] = m
                assert set(messages) == {f"BENCH{i:09d}" for i in range(MESSAGES)}
                assert {m.status for m in messages.values()} == {PROCESSED}
                charge_ids = {r[0] for r in store._query("SELECT charge_id FROM charges")}
                assert len(charge_ids) == expected
                assert store.count_by_status("deliveries") == {SENT: expected}

                stats = sim.state.stats()
                assert stats["duplicate_charges"] == 0
                assert sorted(stats["charge_ids"]) == sorted(charge_ids)

                view = {(n["name"], n["role"]): n for n in cluster_view(store)}
                assert ("node-a", "process") in view and ("node-b", "process") in view
            finally:
                for node in nodes.values():
                    node.stop()
                store.dispose()


def _all_messages(store: PostgresStore) -> list[Any]:
    out, before = [], None
    while page := store.search_messages(before_id=before, limit=500):
        out.extend(page)
        before = page[-1].id
    return out


def _progress(store: PostgresStore) -> str:
    """Where the work stands, for a failure message."""
    return ", ".join(f"{table}: {store.count_by_status(table)}"
                     for table in ("messages", "charges", "deliveries"))
