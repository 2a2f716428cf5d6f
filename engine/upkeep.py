"""A node's periodic upkeep: its heartbeat in the store (for /readyz and the dashboard)
and the channel states set anywhere in the cluster, applied to this node's sources."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from engine.cluster import ChannelStateWatch, heartbeat

log = structlog.get_logger("chargebridge.upkeep")


class NodeUpkeep:
    """Runs every `interval_seconds` on the ingest node's event loop."""

    def __init__(self, state: Any, role: str, interval_seconds: float = 1.0) -> None:
        self.state = state
        self.role = role
        self.interval_seconds = interval_seconds
        self.watch = ChannelStateWatch(state.store)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        from engine.api.control import STARTED, ChannelControl

        control = ChannelControl.of(self.state)
        while True:
            try:
                await asyncio.to_thread(heartbeat, self.state.store, self.state.node,
                                        self.role)
                await asyncio.to_thread(self.state.store.checkpoint)
                changes = await asyncio.to_thread(self.watch.changes)
                for name, wanted in changes.items():
                    if name not in {c.name for c in self.state.config.channels}:
                        continue
                    if wanted == control.state_of(name):
                        continue
                    if wanted == STARTED:
                        await control.start(name, "cluster")
                    elif wanted == "paused":
                        await control.pause(name, "cluster")
                    elif wanted == "stopped":
                        await control.stop(name, "cluster")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # upkeep trouble must never stop the node
                log.warning("upkeep.failed", error=type(exc).__name__)
            await asyncio.sleep(self.interval_seconds)
