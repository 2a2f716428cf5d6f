"""Channel list with live counts, and start / pause / stop of a source."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.api.testing import login_client, sample_message, send
from engine.hl7.mllp import send_messages


class TestChannels:
    def test_counts_and_rate_follow_traffic(self, node: Any, base_url: str) -> None:
        """Received count and this minute's rate rise with each message sent."""
        viewer = login_client(base_url, "viewer")
        before = viewer.get("/api/channels/clinic").json()
        send(node, [sample_message(f"C{i}") for i in range(4)])
        # The overview is cached for a second; poll until it shows the new messages.
        import time

        deadline = time.monotonic() + 30
        after = before
        while time.monotonic() < deadline and after["received"] < before["received"] + 4:
            time.sleep(0.2)
            after = viewer.get("/api/channels/clinic").json()
        assert after["received"] == before["received"] + 4
        assert after["per_minute"][-1] >= 4 and len(after["per_minute"]) == 60
        assert after["state"] == "started" and after["last_message_at"] is not None
        assert viewer.get("/api/channels/nope").status_code == 404

    def test_pause_stops_listening_and_start_resumes(self, node: Any, base_url: str) -> None:
        """A paused MLLP source refuses connections; started again it accepts them."""
        admin = login_client(base_url, "admin")
        port = node.sources["clinic"].port
        reply = admin.post("/api/channels/clinic/pause").json()
        assert reply["results"][0]["outcome"] == "started -> paused"
        with pytest.raises(OSError):
            asyncio.run(send_messages("127.0.0.1", port, [sample_message("P1")], timeout=5))
        assert admin.get("/api/channels/clinic").json()["state"] == "paused"
        assert admin.post("/api/channels/clinic/start").json()["succeeded"] == 1
        acks = send(node, [sample_message("P2")])
        assert b"MSA|AA|" in acks[0] or b"MSA|CA|" in acks[0]
        assert admin.post("/api/channels/nope/stop").status_code == 404
