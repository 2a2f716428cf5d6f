"""CPU per acknowledged message on the ingest path, measured in-process.

`python -m bench.ingest_cpu [--connections 8,1] [--messages 10000]` runs the engine's MLLP
server, `ChannelIngest` and `GroupCommitter` on an SQLite store (fsync on) in this process,
drives them from a load generator in a child process, and reports the CPU time this
process spent per message: all of it, the event loop's thread alone, and the journal
(SQLite calls on any thread) alone, beside the same figures for the bare MLLP server of
bench/ceiling.py. Wall-clock rates on a shared 2-core machine swing with the neighbours;
CPU time per message moves far less, so this is the figure to compare between commits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ceiling import ACK
from engine.config.models import ChannelConfig
from engine.hl7.mllp import MllpServer
from engine.logging import configure_logging
from engine.pipeline.ingest import ChannelIngest
from engine.store.group_commit import GroupCommitter
from engine.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
_CLIENT = """
import asyncio, sys
from bench.load import run_load
from bench.messages import make_dft
first, count, port, conns = (int(a) for a in sys.argv[1:5])
msgs = [make_dft(first + i, lines=3) for i in range(count)]
result = asyncio.run(run_load("127.0.0.1", port, msgs, conns))
print(result.rate, result.nacks)
"""


@dataclass
class CpuResult:
    name: str
    connections: int
    rate: float
    total_us: float
    loop_us: float
    journal_us: float
    batch: float


class _TimedStore(SqliteStore):
    """The real SQLite store, timing the CPU its journal and promotion calls use."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.cpu = 0.0
        self.batches: list[int] = []

    def journal(self, records: Any) -> Any:
        started = time.thread_time()
        try:
            return super().journal(records)
        finally:
            self.cpu += time.thread_time() - started
            self.batches.append(len(records))

    def promote_inbox(self, limit: int | None = None) -> int:
        started = time.thread_time()
        try:
            return super().promote_inbox(limit)
        finally:
            self.cpu += time.thread_time() - started


async def _measure(name: str, connections: int, messages: int, first: int,
                   folder: Path) -> CpuResult:
    store: _TimedStore | None = None
    committer: GroupCommitter | None = None
    if name == "ceiling":
        async def handler(payload: bytes, peer: str) -> bytes | None:
            return ACK
    else:
        store = _TimedStore(folder / f"store-{first}.db")
        store.migrate()
        committer = GroupCommitter(store)
        channel = ChannelConfig.model_validate({"name": "ehr", "source": {"type": "mllp"},
                                                "accept": ["DFT^P03"]})
        ingest = ChannelIngest(channel, committer)

        async def handler(payload: bytes, peer: str) -> bytes | None:
            result = await ingest(payload, channel="ehr", peer=peer, transport="mllp")
            return result.reply

    server = MllpServer(handler, "127.0.0.1", 0)
    await server.start()
    cpu, loop_cpu = time.process_time(), time.thread_time()
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENT, str(first), str(messages), str(server.port),
        str(connections), cwd=str(ROOT), stdout=asyncio.subprocess.PIPE)
    out, _ = await client.communicate()
    cpu, loop_cpu = time.process_time() - cpu, time.thread_time() - loop_cpu
    await server.stop()
    if committer is not None:
        committer.close()
    rate, nacks = out.split()
    if int(nacks):
        raise SystemExit(f"{name}: {nacks.decode()} messages were not acknowledged AA")
    batches = store.batches if store is not None else []
    return CpuResult(name, connections, float(rate), cpu / messages * 1e6,
                     loop_cpu / messages * 1e6,
                     (store.cpu if store is not None else 0.0) / messages * 1e6,
                     sum(batches) / len(batches) if batches else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", default="8,1")
    parser.add_argument("--messages", type=int, default=10000)
    args = parser.parse_args()
    configure_logging("warning")
    print("| run | conns | msg/s | CPU us/msg | event loop us/msg | journal us/msg "
          "| records per commit |")
    print("|---|---|---|---|---|---|---|")
    first = int(time.time()) * 100
    with tempfile.TemporaryDirectory() as folder:
        for conns in (int(c) for c in args.connections.split(",")):
            for name in ("ceiling", "ingest"):
                r = asyncio.run(_measure(name, conns, args.messages, first, Path(folder)))
                first += args.messages
                store_cells = (f"{r.journal_us:.0f} | {r.batch:.1f}" if name == "ingest"
                               else "- | -")
                print(f"| {r.name} | {r.connections} | {r.rate:,.0f} | {r.total_us:.0f} "
                      f"| {r.loop_us:.0f} | {store_cells} |")


if __name__ == "__main__":
    main()
