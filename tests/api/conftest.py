"""Fixtures for the admin API tests: a real engine node (MLLP + HTTP on port 0)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.api.testing import add_users, cheap_password_hashing, running_node, write_config

cheap_password_hashing()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Any]:
    with running_node(write_config(tmp_path)) as running:
        add_users(running.store)
        yield running


@pytest.fixture
def base_url(node: Any) -> str:
    return f"http://127.0.0.1:{node.http_port}"
