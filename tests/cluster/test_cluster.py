"""engine.cluster: node heartbeats and operator channel states, on both backends."""

from __future__ import annotations

import os
import time

import pytest

from engine.cluster import (
    ChannelStateError,
    ChannelStateWatch,
    Heartbeat,
    channel_states,
    cluster_view,
    forget_node,
    heartbeat,
    set_channel_state,
)
from engine.store.base import SqlStore
from tests.store.conftest import StoreFactory


class TestHeartbeat:
    def test_each_node_role_has_one_row_that_beats(self, store: SqlStore) -> None:
        """Beats upsert one row per (node, role) with this pid; cluster_view lists them
        alive, by name and role."""
        heartbeat(store, "node-2", "ingest")
        heartbeat(store, "node-1", "process", host="h1")
        heartbeat(store, "node-1", "process", host="h1")
        view = cluster_view(store)
        assert [(n["name"], n["role"]) for n in view] == [("node-1", "process"),
                                                          ("node-2", "ingest")]
        assert all(n["alive"] and n["pid"] == os.getpid() for n in view)
        assert view[0]["host"] == "h1"

    def test_a_node_that_stops_beating_is_shown_dead(self, store: SqlStore) -> None:
        """A node whose last beat is older than the staleness limit is not alive."""
        heartbeat(store, "node-1", "all")
        time.sleep(0.05)
        [row] = cluster_view(store, stale_after_seconds=0.01)
        assert not row["alive"] and row["seconds_since_seen"] > 0
        assert forget_node(store, "node-1") == 1
        assert cluster_view(store) == []

    def test_the_heartbeat_thread_keeps_beating(self, make_store: StoreFactory) -> None:
        """A running Heartbeat moves last_seen forward until it is stopped."""
        store = make_store()
        beat = Heartbeat(make_store(), "node-9", "ingest", interval_seconds=0.05)
        beat.start()
        try:
            first = cluster_view(store)[0]["last_seen"]
            deadline = time.monotonic() + 30
            while cluster_view(store)[0]["last_seen"] == first:
                assert time.monotonic() < deadline, "no second beat"
                time.sleep(0.05)
        finally:
            beat.stop()


class TestChannelStates:
    def test_states_are_shared_and_audited(self, make_store: StoreFactory) -> None:
        """A state set through one node is what every node reads, with an event saying
        who set it."""
        one, two = make_store(), make_store()
        assert channel_states(two) == {}
        set_channel_state(one, "ehr_dft", "stopped", who="alice")
        set_channel_state(one, "fhir_in", "paused")
        set_channel_state(one, "ehr_dft", "started", who="bob")
        assert channel_states(two) == {"ehr_dft": "started", "fhir_in": "paused"}
        assert [(e.status, e.reason) for e in two.events_for("channel", "ehr_dft")] \
            == [("stopped", "by alice"), ("started", "by bob")]

    def test_an_unknown_state_is_refused(self, store: SqlStore) -> None:
        """Only started, stopped and paused exist; the error names the channel."""
        with pytest.raises(ChannelStateError, match="'halted' for channel 'ehr_dft'"):
            set_channel_state(store, "ehr_dft", "halted")

    def test_the_watch_reports_only_changes(self, make_store: StoreFactory) -> None:
        """ChannelStateWatch reports everything once, then only what changed."""
        operator, node = make_store(), make_store()
        watch = ChannelStateWatch(node)
        assert watch.changes() == {}
        set_channel_state(operator, "a", "stopped")
        set_channel_state(operator, "b", "started")
        assert watch.changes() == {"a": "stopped", "b": "started"}
        assert watch.changes() == {}
        set_channel_state(operator, "b", "paused")
        set_channel_state(operator, "a", "stopped")
        assert watch.changes() == {"b": "paused"}
