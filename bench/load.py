"""The MLLP load generator: N distinct messages over C connections, each sender waiting
for its ACK before the next message (the way EHR interfaces behave)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class LoadResult:
    messages: int
    connections: int
    seconds: float
    latencies: list[float]
    nacks: int

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run_load(host: str, port: int, messages: list[bytes], connections: int) -> LoadResult:
    latencies: list[float] = []
    nacks = 0

    async def one(conn: int) -> None:
        nonlocal nacks
        reader, writer = await asyncio.open_connection(host, port)
        for msg in messages[conn::connections]:
            started = time.perf_counter()
            writer.write(b"\x0b" + msg + b"\x1c\r")
            reply = await reader.readuntil(b"\x1c\r")
            latencies.append(time.perf_counter() - started)
            if b"MSA|AA|" not in reply and b"MSA|CA|" not in reply:
                nacks += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in range(connections)))
    return LoadResult(len(messages), connections, time.perf_counter() - started, latencies,
                      nacks)
