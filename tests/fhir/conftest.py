"""A real engine node in-process for the FHIR tests: config.yaml written to tmp_path and
loaded, HTTP on port 0, a real SQLite store, an API token, and an httpx client."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from engine.auth.tokens import create_token
from engine.config.loader import load_config
from engine.config.models import EngineConfig
from engine.runtime import IngestNode
from engine.store.base import SqlStore
from engine.store.records import StoredMessage

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "fhir"
TEST_MAPPING = Path(__file__).resolve().parent / "data" / "chargeitem_min.yaml"
CHANNEL = "fhir_in"
MAX_BODY = 64 * 1024
FHIR_JSON = "application/fhir+json"


def sample(name: str) -> dict[str, Any]:
    """A shipped sample resource (samples/fhir/<name>.json), as a fresh dict."""
    return copy.deepcopy(json.loads((SAMPLES / f"{name}.json").read_text("utf-8")))


@dataclass
class FhirNode:
    """A running ingest node with one fhir channel, and a client holding a valid token."""

    node: IngestNode
    config: EngineConfig
    config_path: Path
    client: httpx.AsyncClient
    token: str

    @property
    def store(self) -> SqlStore:
        return self.node.store

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": FHIR_JSON, **extra}

    async def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(path, content=data, headers=self.headers(**headers))

    async def put(self, path: str, body: Any, **headers: str) -> httpx.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.put(path, content=data, headers=self.headers(**headers))

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(path, headers=self.headers())

    def messages(self, status: str | None = None) -> list[StoredMessage]:
        """Journaled messages of the channel, oldest first."""
        found = self.store.search_messages(channel=CHANNEL, status=status, limit=1000)
        return sorted(found, key=lambda m: m.id)


def write_config(tmp_path: Path, *, mapping: Path | None,
                 source: dict[str, Any] | None = None) -> Path:
    """A config.yaml with one fhir channel (and a json_file destination)."""
    channel: dict[str, Any] = {
        "name": CHANNEL,
        "source": {"type": "fhir", "max_body_bytes": MAX_BODY, **(source or {})},
        "destinations": ["out"],
    }
    if mapping is not None:
        channel["mapping"] = str(mapping)
    doc = {
        "store": {"url": f"sqlite:///{tmp_path / 'cb.db'}", "fsync": False},
        "http": {"host": "127.0.0.1", "port": 0},
        "logging": {"level": "warning", "format": "console"},
        "out_dir": str(tmp_path / "out"),
        "channels": [channel],
        "destinations": [{"name": "out", "type": "json_file", "directory": "json",
                          "batch_seconds": 0, "fsync": False}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")
    return path


async def start_node(config_path: Path) -> FhirNode:
    config = load_config(config_path)
    node = IngestNode(config, node="fhir-test")
    await node.start()
    token = create_token(node.store, "ehr", "operator")
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}", timeout=30.0)
    return FhirNode(node, config, config_path, client, token)


@pytest.fixture
async def fhir_node(tmp_path: Path) -> AsyncIterator[FhirNode]:
    """An ingest node with a fhir channel and no mapping (ingest behaviour only)."""
    running = await start_node(write_config(tmp_path, mapping=None))
    yield running
    await running.client.aclose()
    await running.node.stop()


class Pipeline:
    """The processor and delivery runner of the node, run on demand in a worker thread."""

    def __init__(self, running: FhirNode) -> None:
        from engine.pipeline.delivery import DeliveryRunner
        from engine.runtime import build_destinations, build_processor

        self.running = running
        store = running.store
        self.destinations = build_destinations(running.config, store)
        self.processor, _ = build_processor(running.config, store, self.destinations, "test")
        self.runner = DeliveryRunner(store, list(self.destinations.values()), owner="test")

    async def process(self) -> int:
        """Process every waiting message; returns how many were processed."""
        total = 0
        while handled := await asyncio.to_thread(self.processor.run_once):
            total += handled
        return total

    async def deliver(self) -> int:
        """Deliver every due charge."""
        total = 0
        while handled := await asyncio.to_thread(self.runner.run_once):
            total += handled
        return total

    def close(self) -> None:
        for destination in self.destinations.values():
            destination.close()


@pytest.fixture
async def fhir_pipeline(tmp_path: Path) -> AsyncIterator[tuple[FhirNode, Pipeline]]:
    """A node whose fhir channel maps ChargeItems (tests/fhir/data/chargeitem_min.yaml) to a
    json_file destination, with its processor and delivery runner."""
    running = await start_node(write_config(tmp_path, mapping=TEST_MAPPING))
    pipeline = Pipeline(running)
    yield running, pipeline
    pipeline.close()
    await running.client.aclose()
    await running.node.stop()
