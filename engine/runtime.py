"""Running an engine node: `chargebridge run --role all|ingest|process`.

role ingest: sources + HTTP + the journal (group commit) in one asyncio loop.
role process: the processor and the delivery runner, in threads, polling the store.
role all: ingest in this process and process in a child process (so mapping work runs
on another core); the child dies with its parent (PR_SET_PDEATHSIG).
SIGTERM/SIGINT drain: sources stop accepting, in-flight messages finish journaling, the
processor finishes its current message; anything acknowledged and not processed is
resumed at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from engine.config.models import EngineConfig
from engine.connectors import Destination, load_connector
from engine.pipeline.delivery import DeliveryRunner, StoreContext
from engine.pipeline.ingest import ChannelIngest, wait_until_processed
from engine.pipeline.processor import ChannelPlan, Processor
from engine.store import open_store
from engine.store.base import SqlStore
from engine.store.group_commit import GroupCommitter
from engine.supervisor import ProcessorChild

log = structlog.get_logger("chargebridge.runtime")

# Messages the processor claims and stores per transaction (one write lock, one commit).
PROCESS_BATCH = 20


def build_destinations(config: EngineConfig, store: SqlStore) -> dict[str, Destination]:
    context = StoreContext(store, config.resolve(config.out_dir))
    built: dict[str, Destination] = {}
    for dest in config.destinations:
        cls = load_connector("destination", dest.type)
        built[dest.name] = cls(dest.name, config.destination_settings[dest.name], context)
    return built


def build_processor(config: EngineConfig, store: SqlStore, destinations: dict[str, Destination],
                    owner: str) -> tuple[Processor, Any]:
    from engine.mapping import MappingRegistry
    from engine.pipeline.hooks import default_hooks
    from engine.scrub import Scrubber, ScrubSettings

    plans: dict[str, ChannelPlan] = {}
    mapping_paths: list[str] = []
    for channel in config.channels:
        path = str(config.resolve(channel.mapping)) if channel.mapping else None
        if path:
            mapping_paths.append(path)
        plans[channel.name] = ChannelPlan(channel, path,
                                          [destinations[d] for d in channel.destinations])
    registry = MappingRegistry(mapping_paths)
    scrubber = Scrubber(ScrubSettings.model_validate(config.scrub))
    hooks = default_hooks(config, store)
    processor = Processor(store, plans, registry, scrubber, owner=owner, message_hooks=hooks)
    for hook in hooks:  # hooks that map (FHIR) share the processor's mappings and scrubber
        bind = getattr(hook, "bind", None)
        if bind is not None:
            bind(processor)
    return processor, registry


class ProcessingWorkers:
    """The processor and delivery loops of one node, each on its own thread."""

    def __init__(self, config: EngineConfig, store: SqlStore, node: str,
                 process_store: SqlStore | None = None) -> None:
        self.owner = f"{node}:process"
        self.store = store
        # Mapping results may be committed without an fsync each: the raw message is
        # already durable and re-processing it is idempotent (deterministic charge ids),
        # so a power loss costs a re-run, never a charge. Deliveries keep full durability.
        self.process_store = process_store or store
        store.release_leases(self.owner)
        self.destinations = build_destinations(config, store)
        self.processor, self.registry = build_processor(config, self.process_store,
                                                        self.destinations, self.owner)
        self.runner = DeliveryRunner(store, list(self.destinations.values()), owner=self.owner)
        self.stopping = threading.Event()
        self.node = node
        self.retention = {c.name: c.retention_days for c in config.channels
                          if c.retention_days}
        self.threads = [threading.Thread(target=self._process_loop, name="processor"),
                        threading.Thread(target=self._deliver_loop, name="delivery"),
                        threading.Thread(target=self._upkeep_loop, name="upkeep")]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)
        for destination in self.destinations.values():
            destination.close()

    def _process_loop(self) -> None:
        last_reload = time.monotonic()
        while not self.stopping.is_set():
            try:
                handled = self.processor.run_once(PROCESS_BATCH)
            except Exception as exc:  # store trouble: log, back off, keep going
                log.error("processor.loop_error", error=type(exc).__name__)
                handled = 0
                self.stopping.wait(1.0)
            if time.monotonic() - last_reload > 1.0:
                last_reload = time.monotonic()
                for problem in self.registry.check_for_changes():
                    log.warning("mapping.reload_refused", detail=problem)
            if not handled:
                self.stopping.wait(0.02)
        self.process_store.close()

    def _upkeep_loop(self) -> None:
        """Every 2 s a heartbeat and a passive WAL checkpoint; every minute content
        partitions ahead (PostgreSQL) and retention pruning in small batches; every hour
        refreshed planner statistics."""
        from engine.cluster import heartbeat
        from engine.store.retention import ensure_partitions, prune_by_days

        last_prune = -60.0
        last_optimize = -3600.0
        while not self.stopping.wait(2.0):
            try:
                heartbeat(self.store, self.node, "process")
                self.store.checkpoint()
                if time.monotonic() - last_prune > 60.0:
                    last_prune = time.monotonic()
                    # PostgreSQL: content partitions for the coming days (no-op on SQLite),
                    # so journaling never has to create one on the ingest path.
                    ensure_partitions(self.store)
                    if time.monotonic() - last_optimize > 3600.0:
                        last_optimize = time.monotonic()
                        self.store.optimize()
                    pruned = prune_by_days(self.store, self.retention) if self.retention else {}
                    for channel, count in pruned.items():
                        if count:
                            log.info("retention.pruned", channel=channel, count=count)
            except Exception as exc:
                log.warning("upkeep.failed", error=type(exc).__name__)
        self.store.close()

    def _deliver_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                handled = self.runner.run_once()
            except Exception as exc:
                log.error("delivery.loop_error", error=type(exc).__name__)
                handled = 0
                self.stopping.wait(1.0)
            if not handled:
                self.stopping.wait(0.05)
        self.store.close()


def run_process_role(config: EngineConfig, node: str = "node-1") -> None:
    """Blocking: processor + delivery until SIGTERM/SIGINT."""
    _die_with_parent()
    if os.environ.get("CHARGEBRIDGE_CHILD") and config.processing.nice:
        # The child of `--role all` shares the cores with the listeners: ACKs go first.
        os.nice(config.processing.nice)
    store = open_store(config.store.url, fsync=config.store.fsync,
                       base_dir=str(config.base_dir))
    process_store = open_store(config.store.url, fsync=False, base_dir=str(config.base_dir))
    workers = ProcessingWorkers(config, store, node, process_store)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    workers.start()
    log.info("engine.started", role="process", node=node, pid=os.getpid())
    while not stop.wait(0.5):
        pass
    workers.stop()
    log.info("engine.stopped", role="process", node=node)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (no orphaned processors)."""
    if sys.platform.startswith("linux") and os.environ.get("CHARGEBRIDGE_CHILD") == "1":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class IngestNode:
    """Sources, HTTP and the journal of one node, in one asyncio loop."""

    def __init__(self, config: EngineConfig, node: str = "node-1") -> None:
        self.config = config
        self.node = node
        self.store = open_store(config.store.url, fsync=config.store.fsync,
                                base_dir=str(config.base_dir))
        self.committer = GroupCommitter(self.store, config.store.group_commit_max)
        self.sources: dict[str, Any] = {}
        self.http_server: Any = None
        self.http_port: int | None = None
        from engine.http.app import EngineState

        self.state = EngineState(config, self.store, self.committer, node=node)

    async def start(self) -> None:
        from engine.cluster import channel_states

        # A channel an operator stopped or paused stays so across restarts and nodes.
        held_back = {name: state for name, state in channel_states(self.store).items()
                     if state in ("stopped", "paused")}
        for channel in self.config.channels:
            if not channel.enabled or channel.name in held_back:
                continue
            settings = self.config.source_settings[channel.name]
            cls = load_connector("source", channel.source.type)
            waiter = None
            if channel.ack_timing == "processed":
                async def waiter(message_id: int) -> tuple[str, str | None]:
                    return await wait_until_processed(self.store, message_id)
            ingest = ChannelIngest(channel, self.committer, waiter)
            self.state.ingests[channel.name] = ingest
            source = cls(channel.name, settings, ingest)
            source.state = self.state
            await source.start()
            self.sources[channel.name] = source
            log.info("channel.started", channel=channel.name, kind=channel.source.type,
                     port=getattr(source, "port", None))
        self.state.sources = self.sources
        if held_back:
            from engine.api.control import ChannelControl

            ChannelControl.of(self.state).flags.update(held_back)
        await self._start_http()
        from engine.upkeep import NodeUpkeep

        self.upkeep = NodeUpkeep(self.state, "ingest")
        self.upkeep.start()
        self.state.ready = True

    async def _start_http(self) -> None:
        import uvicorn

        from engine.http.routes import all_routers

        app = _build(self.state, all_routers(self.state))
        http = self.config.http
        kwargs: dict[str, Any] = {}
        if http.tls is not None:
            kwargs.update(ssl_certfile=str(http.tls.cert), ssl_keyfile=str(http.tls.key))
        server = _QuietServer(uvicorn.Config(app, host=http.host, port=http.port,
                                             log_level="warning", access_log=False,
                                             lifespan="off", **kwargs))
        self.http_task = asyncio.create_task(server.serve())
        while not server.started:
            if self.http_task.done():
                self.http_task.result()
                raise RuntimeError("HTTP listener stopped while starting")
            await asyncio.sleep(0.01)
        self.http_server = server
        self.http_port = server.servers[0].sockets[0].getsockname()[1]
        log.info("http.started", host=http.host, port=self.http_port)

    async def stop(self) -> None:
        self.state.ready = False
        await self.upkeep.stop()
        for name, source in self.sources.items():
            await source.stop()
            log.info("channel.stopped", channel=name)
        if self.http_server is not None:
            self.http_server.should_exit = True
            await self.http_task
        await asyncio.to_thread(self.committer.close)


def _build(state: Any, routers: list[Any]) -> Any:
    from engine.http.app import build_app

    return build_app(state, routers)


class _QuietServer:
    """uvicorn.Server without its own signal handling: the engine owns SIGTERM."""

    def __new__(cls, config: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        return Server(config)


async def run_ingest_role(config: EngineConfig, *, node: str = "node-1",
                          child_role: bool = False, config_path: Path | None = None) -> None:
    """Run sources + HTTP until SIGTERM/SIGINT; with child_role, also the processor child."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    node_runtime = IngestNode(config, node)
    child: ProcessorChild | None = None
    if child_role and config_path is not None:
        child = ProcessorChild(config_path, node)
        child.start()
        node_runtime.state.processor = child
    await node_runtime.start()
    log.info("engine.started", role="all" if child_role else "ingest", node=node,
             pid=os.getpid(), port=node_runtime.http_port)
    await stop.wait()
    log.info("engine.stopping", node=node)
    await node_runtime.stop()
    if child is not None:
        await child.stop()
    log.info("engine.stopped", node=node)
