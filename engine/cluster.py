"""Several engine nodes on one store: per-node heartbeats and channel states.

Each engine process writes a row in `nodes` every few seconds (heartbeat); the dashboard
and `/readyz` read them with `cluster_view`. An operator's channel start / stop / pause
is a row in `channel_states`; every node polls it (`ChannelStateWatch`) and brings its
own listeners in line, so one click applies to the whole cluster. Both tables work on
SQLite (one node) and PostgreSQL (many).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import structlog

from engine.errors import ChargeBridgeError
from engine.store.base import SqlStore

log = structlog.get_logger("chargebridge.cluster")

CHANNEL_STATES = ("started", "stopped", "paused")
# When this process started: a node row's started_at changes only when its process does.
_PROCESS_STARTED = time.time()


class ChannelStateError(ChargeBridgeError, ValueError):
    """A channel state outside started / stopped / paused was asked for."""


def heartbeat(store: SqlStore, node: str, role: str, *, pid: int | None = None,
              host: str | None = None) -> None:
    """Record that `node`'s `role` process is alive now (one small transaction)."""
    now = time.time()
    with store.transaction() as cur:
        store._exec(cur, "INSERT INTO nodes (name, role, pid, host, started_at, last_seen) "
                         "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name, role) DO UPDATE SET "
                         "pid = excluded.pid, host = excluded.host, "
                         "started_at = excluded.started_at, last_seen = excluded.last_seen",
                    (node, role, os.getpid() if pid is None else pid,
                     socket.gethostname() if host is None else host, _PROCESS_STARTED, now))


def cluster_view(store: SqlStore, stale_after_seconds: float = 15.0) -> list[dict[str, Any]]:
    """Every node process that ever beat: name, role, pid, host, started_at, last_seen,
    seconds_since_seen and alive (beat within `stale_after_seconds`), by name and role."""
    now = time.time()
    rows = store._query("SELECT name, role, pid, host, started_at, last_seen FROM nodes "
                        "ORDER BY name, role")
    return [{"name": r[0], "role": r[1], "pid": r[2], "host": r[3], "started_at": r[4],
             "last_seen": r[5], "seconds_since_seen": round(max(0.0, now - r[5]), 3),
             "alive": now - r[5] <= stale_after_seconds} for r in rows]


def forget_node(store: SqlStore, node: str) -> int:
    """Remove a decommissioned node's rows from the view; returns how many went."""
    with store.transaction() as cur:
        return int(store._exec(cur, "DELETE FROM nodes WHERE name = ?", (node,)).rowcount)


def set_channel_state(store: SqlStore, name: str, state: str, who: str = "") -> None:
    """Ask every node to start, stop or pause channel `name` (recorded as an event)."""
    if state not in CHANNEL_STATES:
        raise ChannelStateError(f"channel state must be one of {', '.join(CHANNEL_STATES)}; "
                                f"got {state!r} for channel {name!r}")
    now = time.time()
    with store.transaction() as cur:
        store._exec(cur, "INSERT INTO channel_states (name, state, updated_at, updated_by) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                         "state = excluded.state, updated_at = excluded.updated_at, "
                         "updated_by = excluded.updated_by", (name, state, now, who))
        store._event(cur, "channel", name, state, f"by {who}" if who else None, now)
    log.info("channel.state_set", channel=name, status=state)


def channel_states(store: SqlStore) -> dict[str, str]:
    """The state operators set per channel; a channel never set has no entry (it runs
    as its config's `enabled` says)."""
    return {r[0]: r[1] for r in store._query("SELECT name, state FROM channel_states")}


class ChannelStateWatch:
    """Polls `channel_states` and reports only what changed since the previous poll.

    A node calls `changes()` every second or so and applies each (channel, state) to its
    own listener; the first call reports every state set so far.
    """

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.seen: dict[str, str] = {}

    def changes(self) -> dict[str, str]:
        current = channel_states(self.store)
        changed = {name: state for name, state in current.items()
                   if self.seen.get(name) != state}
        self.seen = current
        return changed


class Heartbeat:
    """A daemon thread that calls `heartbeat` every `interval_seconds` until stopped."""

    def __init__(self, store: SqlStore, node: str, role: str,
                 interval_seconds: float = 2.0) -> None:
        self.store = store
        self.node = node
        self.role = role
        self.interval_seconds = interval_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{role}",
                                        daemon=True)

    def start(self) -> None:
        heartbeat(self.store, self.node, self.role)  # visible at once, not a beat later
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_seconds):
            try:
                heartbeat(self.store, self.node, self.role)
            except Exception as exc:  # the store is away: the next beat tries again
                log.warning("cluster.heartbeat_failed", node=self.node,
                            error=type(exc).__name__)
        self.store.close()
