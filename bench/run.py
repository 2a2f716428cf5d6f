"""`make bench`: the foundation benchmark.

For each connection count: the bare MLLP ACK server (transport ceiling) and the engine
(SQLite, fsync on, group commit) measured in the same run with the same load generator;
then the time until every message has become charges, and the mapping cost per FT1.
Prints a Markdown table; docs/benchmarks.md records the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.load import LoadResult, run_load
from bench.messages import make_dft

ROOT = Path(__file__).resolve().parent.parent


def _wait_file(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {path}")


def ceiling(messages: list[bytes], connections: int) -> LoadResult:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen([sys.executable, "-m", "bench.ceiling", str(port_file)],
                                cwd=ROOT)
        try:
            port = int(_wait_file(port_file))
            return asyncio.run(run_load("127.0.0.1", port, messages, connections))
        finally:
            proc.terminate()
            proc.wait(10)


def engine_run(messages: list[bytes], connections: int, store_url: str | None = None
               ) -> tuple[LoadResult, float]:
    """Returns the ACK load result and seconds until every message became charges."""
    from tests.engine_process import EngineProcess, engine_config

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = engine_config(tmp, store_url=store_url)
        # Time until charges exist is measured, so no destination competes for the CPU.
        config["channels"][0]["destinations"] = []
        config["destinations"] = []
        engine = EngineProcess(tmp, config).start()
        try:
            started = time.perf_counter()
            result = asyncio.run(run_load("127.0.0.1", engine.ports["ehr_dft"], messages,
                                          connections))
            done = _wait_processed(tmp, len(messages), store_url)
            return result, done - started
        finally:
            engine.stop()


def _wait_processed(tmp: Path, count: int, store_url: str | None) -> float:
    from engine.store import open_store

    store = open_store(store_url or f"sqlite:///{tmp / 'store.db'}")
    while True:
        counts = store.count_by_status("messages")
        if counts.get("RECEIVED", 0) == 0 and sum(counts.values()) >= count:
            return time.perf_counter()
        time.sleep(0.05)


def mapping_cost_us(iterations: int = 2000) -> float:
    from engine.hl7.reader import parse
    from engine.mapping import load_mapping

    mapping = load_mapping(ROOT / "mappings" / "dft_p03.yaml")
    raw = make_dft(1, lines=3)
    msg = parse(raw)
    mapping.apply(msg, channel="bench")
    started = time.perf_counter()
    for _ in range(iterations):
        mapping.apply(parse(raw), channel="bench")
    return (time.perf_counter() - started) / iterations / 3 * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--connections", default="8,1")
    parser.add_argument("--store-url", default=None, help="e.g. postgresql://... (default "
                        "SQLite in a temp dir)")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    messages = [make_dft(i, lines=3) for i in range(args.messages)]
    print(f"# ChargeBridge bench: {args.messages} DFT^P03 (3 FT1 each), fsync on, "
          f"{os.cpu_count()} CPUs\n")
    print("| connections | run | msg/s | p50 ms | p99 ms | NACKs | all charges after s "
          "| engine/ceiling |")
    print("|---|---|---|---|---|---|---|---|")
    for conns in (int(c) for c in args.connections.split(",")):
        base = ceiling(messages, conns)
        print(f"| {conns} | bare MLLP ceiling | {base.rate:,.0f} | {base.percentile(50)*1e3:.2f}"
              f" | {base.percentile(99)*1e3:.2f} | {base.nacks} | - | 1.00 |", flush=True)
        result, processed = engine_run(messages, conns, args.store_url)
        print(f"| {conns} | engine | {result.rate:,.0f} | {result.percentile(50)*1e3:.2f} | "
              f"{result.percentile(99)*1e3:.2f} | {result.nacks} | {processed:.1f} "
              f"({args.messages / processed:,.0f} msg/s) | {result.rate / base.rate:.2f} |",
              flush=True)
    print(f"\nmapping cost (standard dft_p03 mapping, incl. parse): "
          f"{mapping_cost_us():.1f} us per FT1")


if __name__ == "__main__":
    main()
