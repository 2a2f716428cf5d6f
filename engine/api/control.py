"""Starting, pausing and stopping channel sources on this node.

pause: the source stops accepting (senders queue on their side); processing and delivery
of what was already received go on. stop: the same, and the state is shared with other
nodes through engine.cluster when that module is present, so processors can honour it.
start: the source listens again (an MLLP source on port 0 gets a new port).
Without engine.cluster the state is this process's alone and resets at restart.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import structlog

from engine.connectors import load_connector

log = structlog.get_logger("chargebridge.api")

STARTED, PAUSED, STOPPED = "started", "paused", "stopped"


class ChannelControl:
    """Channel states of one engine node (one per EngineState)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.flags: dict[str, str] = {}

    @classmethod
    def of(cls, state: Any) -> ChannelControl:
        control = getattr(state, "_channel_control", None)
        if control is None:
            control = cls(state)
            state._channel_control = control
        return control  # type: ignore[no-any-return]

    def state_of(self, name: str) -> str:
        if name in self.flags:
            return self.flags[name]
        if name in self.state.sources:
            return STARTED
        try:
            enabled = self.state.config.channel(name).enabled
        except KeyError:
            return "unknown"
        return "not running here" if enabled else "disabled"

    def _share(self, name: str, value: str, who: str) -> None:
        try:
            cluster = importlib.import_module("engine.cluster")
        except ImportError:
            return
        setter = getattr(cluster, "set_channel_state", None)
        if setter is None:
            return
        try:
            setter(self.state.store, name, value, who)
        except Exception as exc:  # sharing is best effort; the local state still applies
            log.warning("channel.state_not_shared", channel=name, error=type(exc).__name__)

    async def pause(self, name: str, who: str = "") -> str:
        return await self._halt(name, PAUSED, who)

    async def stop(self, name: str, who: str = "") -> str:
        return await self._halt(name, STOPPED, who)

    async def _halt(self, name: str, target: str, who: str) -> str:
        self.state.config.channel(name)  # KeyError for an unknown channel
        source = self.state.sources.get(name)
        previous = self.state_of(name)
        if source is not None and previous == STARTED:
            await source.stop()
        self.flags[name] = target
        await asyncio.to_thread(self._share, name, target, who)
        log.info("channel.state_changed", channel=name, status=target)
        return f"{previous} -> {target}"

    async def start(self, name: str, who: str = "") -> str:
        channel = self.state.config.channel(name)
        previous = self.state_of(name)
        if previous == STARTED:
            return "already started"
        source = self.state.sources.get(name)
        if source is None:
            source = self._build_source(channel)
        await source.start()
        self.state.sources[name] = source
        self.flags[name] = STARTED
        await asyncio.to_thread(self._share, name, STARTED, who)
        log.info("channel.state_changed", channel=name, status=STARTED,
                 port=getattr(source, "port", None))
        return f"{previous} -> {STARTED}"

    def _build_source(self, channel: Any) -> Any:
        from engine.pipeline.ingest import ChannelIngest, wait_until_processed

        store = self.state.store
        waiter = None
        if channel.ack_timing == "processed":
            async def waiter(message_id: int) -> tuple[str, str | None]:
                return await wait_until_processed(store, message_id)
        ingest = self.state.ingests.get(channel.name) or ChannelIngest(
            channel, self.state.committer, waiter)
        self.state.ingests[channel.name] = ingest
        cls = load_connector("source", channel.source.type)
        source = cls(channel.name, self.state.config.source_settings[channel.name], ingest)
        source.state = self.state
        return source
