"""A real engine node in-process for the inbound tests: config written to tmp_path and loaded
like config.yaml, MLLP and HTTP on port 0, a real SQLite store; plus message builders."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from engine.config.loader import load_config
from engine.logging import configure_logging
from engine.runtime import IngestNode
from engine.store.base import SqlStore

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "hl7"
ACCEPT = ["DFT^P03", "ADT^A01", "ADT^A03", "ADT^A04", "ADT^A08", "ADT^A28", "ADT^A31"]


def sample(name: str) -> bytes:
    """A shipped sample message (samples/hl7/<name>.hl7), segments separated by \\r."""
    return (SAMPLES / f"{name}.hl7").read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def dft(i: int, *, version: str = "2.5.1", msh15: str = "", msh16: str = "",
        sender: str = "ACMEEHR", ft1: list[str] | None = None, mrn: str | None = None,
        pid: str | None = None, in1: bool = True) -> bytes:
    """A small DFT^P03 with MSH-10 `C<i>` (one FT1 unless `ft1` gives the lines)."""
    mrn = mrn or f"MRN{i:06d}"
    lines = ft1 if ft1 is not None else [
        f"FT1|1|T{i}-1||20240315|20240315143000|CG|99213^Office visit^C4|||1|145.00|145.00|"
        f"FM|||NCFM^EXAM4^^NORTHCLINIC|||E11.9^Diabetes^I10|1234567893^Okafor^Daniel|||||"
        f"99213^Office visit^C4"]
    segs = [
        f"MSH|^~\\&|{sender}|NORTHCLINIC|CHARGEBRIDGE|NCBILLING|20240315143000||DFT^P03|C{i}|P|"
        f"{version}|||{msh15}|{msh16}",
        "EVN|P03|20240315143000",
        pid or f"PID|1||{mrn}^^^NORTHCLINIC^MR||Testpatient^Alex^Q||19800101|F|||"
               "1 Test Way^^Springfield^IL^62704^USA",
        f"PV1|1|O|NCFM^EXAM4^^NORTHCLINIC|R|||1234567893^Okafor^Daniel|||FM||||||||OP|V{i:08d}",
        *lines,
    ]
    if in1:
        segs.append("IN1|1|BCBS-PPO^Blue Cross PPO|00621|Blue Cross Blue Shield of Illinois|"
                    "|||GRP778210|||||||PPO|Testpatient^Alex^Q|SEL|19800101||||||||||||||||||"
                    "XOH884512037")
    return ("\r".join(segs) + "\r").encode()


def msa(reply: bytes) -> list[str]:
    """MSA fields of an ACK (index 1 is the code, 2 the echoed control id)."""
    for segment in reply.decode("utf-8", "replace").split("\r"):
        if segment.startswith("MSA|"):
            return segment.split("|")
    raise AssertionError(f"no MSA segment in {reply!r}")


def err(reply: bytes) -> str:
    """The ERR segment of an ACK."""
    for segment in reply.decode("utf-8", "replace").split("\r"):
        if segment.startswith("ERR|"):
            return segment
    raise AssertionError(f"no ERR segment in {reply!r}")


def channel(name: str = "ehr", source: dict[str, Any] | None = None,
            **options: Any) -> dict[str, Any]:
    """A channel config: MLLP on port 0 unless `source` says otherwise."""
    return {"name": name, "source": source or {"type": "mllp", "host": "127.0.0.1", "port": 0},
            "accept": ACCEPT, **options}


async def wait_until(predicate: Callable[[], Any], timeout: float = 30.0,
                     what: str = "condition") -> Any:
    """Poll `predicate` (in a thread: it may query the store) until truthy or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def count(store: SqlStore, **filters: Any) -> int:
    """How many stored messages match (the newest 1,000,000)."""
    return len(store.search_messages(limit=1_000_000, **filters))


StartNode = Callable[..., Awaitable[IngestNode]]


@pytest.fixture(autouse=True)
def quiet_logs() -> Any:
    """Warnings and errors only, as JSON: per-message info lines would swamp the output."""
    configure_logging("warning", "json")
    yield
    structlog.reset_defaults()


@pytest.fixture
async def start_node(tmp_path: Path) -> AsyncIterator[StartNode]:
    """Start IngestNodes on a config with the given channels; all are stopped afterwards."""
    nodes: list[IngestNode] = []

    async def start(channels: list[dict[str, Any]], *, name: str = "config",
                    **extra: Any) -> IngestNode:
        doc = {"store": {"url": f"sqlite:///{tmp_path / 'store.db'}", "fsync": False},
               "http": {"host": "127.0.0.1", "port": 0}, "out_dir": str(tmp_path / "out"),
               "channels": channels, **extra}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        node = IngestNode(load_config(path))
        await node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        if node.state.ready:
            await node.stop()


def mllp_port(node: IngestNode, name: str = "ehr") -> int:
    """The bound port of an MLLP channel."""
    return int(node.sources[name].port)
