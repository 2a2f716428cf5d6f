"""A channel stopped or started anywhere in the cluster (a state row in the shared store)
is applied by every node's upkeep to its own listener within a couple of seconds."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from engine.api.testing import running_node, sample_message, send_to, write_config
from engine.cluster import set_channel_state
from engine.store import open_store


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _wait(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


class TestNodesFollowChannelStates:
    def test_stop_and_start_from_another_node(self, tmp_path: Path) -> None:
        """'stopped' written by another node closes this node's MLLP listener; 'started'
        opens it again and messages are acknowledged; a restarted node keeps it stopped."""
        config = write_config(tmp_path)
        other_node = open_store(f"sqlite:///{tmp_path / 'var' / 'chargebridge.db'}")
        with running_node(config) as node:
            port = node.sources["clinic"].port
            assert _accepts(port)
            set_channel_state(other_node, "clinic", "stopped", who="node-2")
            _wait(lambda: not _accepts(port))
            set_channel_state(other_node, "clinic", "started", who="node-2")
            _wait(lambda: node.sources["clinic"].server is not None
                  and _accepts(node.sources["clinic"].port))
            [ack] = send_to(node.sources["clinic"].port, [sample_message("STATE-1")])
            assert b"MSA|AA|STATE-1" in ack
            set_channel_state(other_node, "clinic", "stopped", who="node-2")
            _wait(lambda: not _accepts(node.sources["clinic"].port))
        with running_node(config) as restarted:
            assert "clinic" not in restarted.sources
