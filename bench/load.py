"""The MLLP load generator: N distinct messages over C connections, each sender waiting
for its ACK before the next message (the way EHR interfaces behave).

Connections are spread round-robin over one or more ports (several engine nodes), may use
TLS, and may be accompanied by idle connections opened before the measured load and held
open through it (an engine serving many quiet interfaces besides the busy ones).
"""

from __future__ import annotations

import asyncio
import ssl
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


async def _open(host: str, port: int, ssl_context: ssl.SSLContext | None
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if ssl_context is None:
        return await asyncio.open_connection(host, port)
    return await asyncio.open_connection(host, port, ssl=ssl_context, server_hostname=host)


async def run_load(host: str, port: int | list[int], messages: list[bytes], connections: int,
                   *, ssl_context: ssl.SSLContext | None = None, idle: int = 0) -> LoadResult:
    """Send `messages` over `connections` busy connections (round-robin over the ports);
    `idle` further connections are opened first and held open, silent, until the end."""
    ports = [port] if isinstance(port, int) else list(port)
    latencies: list[float] = []
    nacks = 0

    idle_writers = []
    for n in range(idle):
        _, writer = await _open(host, ports[n % len(ports)], ssl_context)
        idle_writers.append(writer)

    async def one(conn: int) -> None:
        nonlocal nacks
        reader, writer = await _open(host, ports[conn % len(ports)], ssl_context)
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
    elapsed = time.perf_counter() - started
    for writer in idle_writers:
        writer.close()
    return LoadResult(len(messages), connections, elapsed, latencies, nacks)
