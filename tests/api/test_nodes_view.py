"""Per-node health for operators: every engine process sharing the store, with its last
heartbeat, in the admin API and on the dashboard's system page."""

from __future__ import annotations

import time
from typing import Any

from engine.api.testing import login_client


class TestNodesView:
    def test_api_and_page_show_this_node_alive(self, node: Any, base_url: str) -> None:
        """The node's ingest process beats within a couple of seconds and is listed alive;
        the system page shows it."""
        client = login_client(base_url, "viewer")
        try:
            deadline = time.monotonic() + 20
            nodes: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                nodes = client.get("/api/system/nodes").json()
                if nodes:
                    break
                time.sleep(0.2)
            assert [(n["name"], n["role"], n["alive"]) for n in nodes] == [
                ("node-1", "ingest", True)]
            page = client.get("/system")
            assert page.status_code == 200
            assert "node-1" in page.text and "alive" in page.text
        finally:
            client.close()
