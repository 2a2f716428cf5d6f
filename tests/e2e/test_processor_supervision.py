"""The processing child of `--role all` is supervised: killed, it comes back, and the
messages acknowledged meanwhile are processed."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx

from bench.messages import make_dft
from engine.hl7.mllp import send_messages
from engine.store.sqlite import SqliteStore
from tests.engine_process import EngineProcess, engine_config, wait_for


def _process_pid(port: int) -> int | None:
    nodes = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()["nodes"]
    alive = [n for n in nodes if n["role"] == "process" and n["alive"]]
    return alive[0]["pid"] if alive else None


class TestProcessorSupervision:
    def test_killed_processor_restarts_and_catches_up(self, tmp_path: Path) -> None:
        """SIGKILL of the processing child: ACKs go on, /readyz shows a new processor
        process, and every message acknowledged meanwhile becomes charges."""
        engine = EngineProcess(tmp_path, engine_config(tmp_path)).start()
        try:
            assert engine.http_port is not None
            first = wait_for(lambda: _process_pid(engine.http_port), what="processor heartbeat")
            os.kill(first, signal.SIGKILL)
            replies = asyncio.run(send_messages("127.0.0.1", engine.ports["ehr_dft"],
                                                [make_dft(i) for i in range(10)]))
            assert all(b"MSA|AA|" in r for r in replies)
            wait_for(lambda: (_process_pid(engine.http_port) or first) != first, timeout=60,
                     what="a new processor process")
            store = SqliteStore(tmp_path / "store.db")
            wait_for(lambda: store.count_by_status("messages") == {"PROCESSED": 10},
                     timeout=60, what="the 10 messages processed")
            assert any(e.get("event") == "processor.exited" for e in engine.log_events())
        finally:
            assert engine.stop() == 0

    def test_processor_runs_at_the_configured_lower_priority(self, tmp_path: Path) -> None:
        """ACKs go first when the cores are short: the child's nice value is the config's,
        the listening process keeps its own."""
        config = engine_config(tmp_path)
        config["processing"] = {"nice": 7}
        engine = EngineProcess(tmp_path, config).start()
        try:
            assert engine.http_port is not None and engine.proc is not None
            child = wait_for(lambda: _process_pid(engine.http_port), what="processor heartbeat")
            assert _nice(child) == _nice(os.getpid()) + 7
            assert _nice(engine.proc.pid) == _nice(os.getpid())
        finally:
            assert engine.stop() == 0


def _nice(pid: int) -> int:
    # /proc/PID/stat: field 19 is the nice value (after the parenthesised command name).
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])
