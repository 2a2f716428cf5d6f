"""Supervises the processing child of `chargebridge run --role all`.

The ingest process keeps acknowledging while the child maps and delivers; if the child
dies (a crash, an OOM kill) nothing acknowledged is lost — it waits in the store — but
nothing is processed either, so the supervisor restarts it with a growing delay and
/readyz reports the node not ready meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import structlog

log = structlog.get_logger("chargebridge.supervisor")


class ProcessorChild:
    """One `--role process` child, restarted when it exits unexpectedly."""

    def __init__(self, config_path: Path, node: str, max_delay_seconds: float = 30.0) -> None:
        self.command = [sys.executable, "-m", "engine.cli", "run", "--config",
                        str(config_path), "--role", "process", "--node", node]
        self.max_delay_seconds = max_delay_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self._spawn()
        self._task = asyncio.create_task(self._watch())

    def _spawn(self) -> None:
        env = {**os.environ, "CHARGEBRIDGE_CHILD": "1"}
        self.proc = subprocess.Popen(self.command, env=env)

    async def _watch(self) -> None:
        delay = 1.0
        while not self.stopping:
            assert self.proc is not None
            code = await asyncio.to_thread(self.proc.wait)
            if self.stopping:
                return
            self.restarts += 1
            log.error("processor.exited", pid=self.proc.pid, code=code, attempts=self.restarts,
                      retry_in_seconds=delay)
            await asyncio.sleep(delay)
            if self.stopping:
                return
            delay = min(delay * 2, self.max_delay_seconds)
            self._spawn()

    async def stop(self, timeout: float = 60.0) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self._task is not None:
            self._task.cancel()
