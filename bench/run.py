"""`make bench`: the foundation benchmark.

Each row is one configuration measured twice in the same run with the same load
generator: the bare MLLP ACK server (the transport ceiling, with the same TLS, idle
connections and number of listeners) and the engine (fsync on, group commit), followed by
the time until every message has become charges. Then the mapping cost per FT1. Prints
one Markdown table; docs/benchmarks.md records the figures.

Without options, the default suite: SQLite over 8 and 1 connections, TLS over 8, 100
idle + 8 busy connections, and (when the PostgreSQL at --pg-url answers) PostgreSQL with
one node and two nodes. With --tls, --idle, --store-url or --nodes, (or --connections alone)
one configuration is measured for each of --connections.

    python -m bench.run                      # the default suite (a few minutes)
    python -m bench.run --tls --connections 8 --messages 20000
    python -m bench.run --store-url postgresql://postgres@127.0.0.1:5432/test --nodes 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import LoadResult, run_load
from bench.messages import make_dft

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = os.environ.get("CHARGEBRIDGE_TEST_PG_URL",
                            "postgresql://postgres@127.0.0.1:5432/test")
LINES = 3  # FT1 segments per message: every message becomes 3 charges


@dataclass(frozen=True)
class Scenario:
    """One configuration: store, nodes, TLS, idle connections, busy connections."""

    label: str
    connections: int
    messages: int
    tls: bool = False
    idle: int = 0
    store_url: str | None = None  # None: SQLite in a temp dir; postgresql://: private schema
    nodes: int = 1
    role: str = "all"  # "ingest": no processor, measures acknowledgement alone
    processor_nice: int | None = None  # None: the engine's default (processing.nice)


@dataclass(frozen=True)
class Tls:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""

    ca: str
    cert: str
    key: str

    def client(self) -> ssl.SSLContext:
        from engine.hl7.tls import client_ssl_context

        return client_ssl_context(self.ca)


def make_tls(directory: Path) -> Tls:
    if not shutil.which("openssl"):
        raise SystemExit("--tls needs the openssl command-line tool")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                       timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/CN=ChargeBridge bench CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext")
    return Tls(str(directory / "ca.crt"), str(directory / "server.crt"),
               str(directory / "server.key"))


@contextmanager
def private_schema(url: str) -> Iterator[str]:
    """`url` on a fresh schema bench_<random>, dropped afterwards; a URL that already names
    a schema is used as given and left alone."""
    import psycopg

    from engine.store.postgres import split_url

    conninfo, schema = split_url(url)
    if schema is not None:
        yield url
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}schema={schema}"
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pg_reachable(url: str) -> bool:
    import psycopg

    from engine.store.postgres import split_url

    try:
        with psycopg.connect(split_url(url)[0], connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _wait_file(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {path}")


def ceiling(messages: list[bytes], s: Scenario, tls: Tls | None) -> LoadResult:
    """The bare ACK server: one process per engine node, same TLS and idle connections."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        try:
            ports = []
            for n in range(s.nodes):
                port_file = Path(tmp) / f"port{n}"
                extra = [tls.cert, tls.key] if s.tls and tls else []
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.ceiling", str(port_file), *extra], cwd=ROOT,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                ports.append(int(_wait_file(port_file)))
            return asyncio.run(run_load("127.0.0.1", ports, messages, s.connections,
                                        ssl_context=tls.client() if s.tls and tls else None,
                                        idle=s.idle))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)


@dataclass
class EngineResult:
    load: LoadResult
    charges_after: float  # seconds from the first message until every message has charges
    charges: int
    statuses: dict[str, int]


def engine_run(messages: list[bytes], s: Scenario, tls: Tls | None) -> EngineResult:
    from tests.engine_process import EngineProcess, engine_config

    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        url = s.store_url
        if url is not None and url.startswith(("postgresql://", "postgres://")):
            url = stack.enter_context(private_schema(url))
        url = url or f"sqlite:///{tmp / 'store.db'}"
        engines = []
        for n in range(s.nodes):
            folder = tmp / f"node{n + 1}"
            folder.mkdir()
            config: dict[str, Any] = engine_config(folder, store_url=url)
            # Time until charges exist is measured, so no destination competes for the CPU.
            config["channels"][0]["destinations"] = []
            config["destinations"] = []
            if s.processor_nice is not None:
                config["processing"] = {"nice": s.processor_nice}
            if s.tls and tls is not None:
                config["channels"][0]["source"].update(tls_cert=tls.cert, tls_key=tls.key)
            engine = EngineProcess(folder, config, node=f"node-{n + 1}", role=s.role)
            engines.append(engine)
            stack.callback(engine.stop)
            try:
                engine.start(timeout=180)
            except AssertionError as exc:
                tail = engine.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{exc}\n--- engine log tail ---\n{tail}") from None
        ports = [e.ports["ehr_dft"] for e in engines]
        started = time.perf_counter()
        result = asyncio.run(run_load("127.0.0.1", ports, messages, s.connections,
                                      ssl_context=tls.client() if s.tls and tls else None,
                                      idle=s.idle))
        if s.role == "ingest":
            return EngineResult(result, 0.0, 0, {})
        done, charges, statuses = _wait_processed(url, len(messages))
        return EngineResult(result, done - started, charges, statuses)


def _wait_processed(url: str, count: int, timeout: float = 900.0
                    ) -> tuple[float, int, dict[str, int]]:
    """Poll until no message is left RECEIVED; returns (when, charges, message statuses)."""
    from engine.store import open_store

    store = open_store(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = store.count_by_status("messages")
            if counts.get("RECEIVED", 0) == 0 and sum(counts.values()) >= count:
                done = time.perf_counter()
                charges = sum(store.count_by_status("charges").values())
                return done, charges, counts
            time.sleep(0.1)
        raise RuntimeError(f"messages still unprocessed after {timeout}s: {counts}")
    finally:
        getattr(store, "dispose", store.close)()


def mapping_cost(iterations: int = 3000) -> tuple[float, float, float]:
    """(parse us per message, mapping us per FT1, parse + mapping us per FT1) for the
    standard dft_p03 mapping on a 3-FT1 DFT."""
    from engine.hl7.reader import parse
    from engine.mapping import load_mapping

    mapping = load_mapping(ROOT / "mappings" / "dft_p03.yaml")
    raw = make_dft(1, lines=LINES)
    mapping.apply(parse(raw), channel="bench")

    def best(fn: Any) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times) / iterations * 1e6

    parse_us = best(lambda: [parse(raw) for _ in range(iterations)])
    # Reader messages may cache fields on first access; map fresh ones each round.
    apply_us = min(_timed_apply(mapping, [parse(raw) for _ in range(iterations)])
                   for _ in range(3)) / iterations * 1e6
    def parse_and_map() -> None:
        # Results are dropped as they come, as the processor does: holding thousands of
        # them would time the garbage collector, not the mapping.
        for _ in range(iterations):
            mapping.apply(parse(raw), channel="bench")

    both_us = best(parse_and_map)
    return parse_us, apply_us / LINES, both_us / LINES


def _timed_apply(mapping: Any, msgs: list[Any]) -> float:
    started = time.perf_counter()
    for msg in msgs:
        mapping.apply(msg, channel="bench")
    return time.perf_counter() - started


def default_suite(messages: int, pg_url: str | None) -> list[Scenario]:
    suite = [
        Scenario("SQLite", 8, messages),
        Scenario("SQLite", 1, max(1000, messages * 3 // 10)),
        Scenario("SQLite, TLS", 8, messages // 2),
        Scenario("SQLite, 100 idle conns", 8, messages // 2, idle=100),
    ]
    if pg_url is not None:
        suite += [Scenario("PostgreSQL, 1 node", 8, messages // 2, store_url=pg_url),
                  Scenario("PostgreSQL, 2 nodes", 8, messages // 2, store_url=pg_url,
                           nodes=2)]
    return suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10000,
                        help="Messages per run (the default suite uses fewer for slow runs).")
    parser.add_argument("--connections", default=None,
                        help="Busy connections, comma list (default 8,1); given alone, "
                        "measures plain SQLite for each.")
    parser.add_argument("--tls", action="store_true", help="MLLP over TLS (engine and ceiling).")
    parser.add_argument("--idle", type=int, default=0,
                        help="Idle connections opened before the load and held open.")
    parser.add_argument("--store-url", default=None,
                        help="postgresql://...: runs on a private schema bench_<random>, "
                        "dropped afterwards (default: SQLite in a temp dir).")
    parser.add_argument("--nodes", type=int, default=1,
                        help="Engine processes sharing the (PostgreSQL) store, load split.")
    parser.add_argument("--pg-url", default=DEFAULT_PG,
                        help="PostgreSQL for the default suite's PostgreSQL rows.")
    parser.add_argument("--no-pg", action="store_true",
                        help="Leave PostgreSQL out of the default suite.")
    parser.add_argument("--ingest-only", action="store_true",
                        help="Run the engine with --role ingest (no processor): the "
                        "acknowledgement path alone; no charges are made.")
    parser.add_argument("--processor-nice", type=int, default=None,
                        help="processing.nice for the engine's processor child (default: "
                        "the engine's default, 10; 0 = the same priority as ingest).")
    parser.add_argument("--no-mapping", action="store_true", help="Skip the mapping cost.")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.nodes > 1 and not (args.store_url or "").startswith("postgres"):
        raise SystemExit("--nodes > 1 needs --store-url postgresql://... (nodes share a store)")

    custom = (args.tls or args.idle or args.store_url or args.nodes > 1 or args.ingest_only
              or args.connections is not None or args.processor_nice is not None)
    role = "ingest" if args.ingest_only else "all"
    if custom:
        label = ("PostgreSQL" if args.store_url else "SQLite") + (
            ", ingest only" if args.ingest_only else "") + (
            f", {args.nodes} nodes" if args.nodes > 1 else "") + (", TLS" if args.tls else "") + (
            f", {args.idle} idle conns" if args.idle else "") + (
            f", processor nice {args.processor_nice}" if args.processor_nice is not None
            else "")
        scenarios = [Scenario(label, int(c), args.messages, tls=args.tls, idle=args.idle,
                              store_url=args.store_url, nodes=args.nodes, role=role,
                              processor_nice=args.processor_nice)
                     for c in (args.connections or "8,1").split(",")]
    else:
        pg = None if args.no_pg or not pg_reachable(args.pg_url) else args.pg_url
        scenarios = default_suite(args.messages, pg)
        if pg is None and not args.no_pg:
            print(f"(PostgreSQL at {args.pg_url} not reachable: its rows are left out)\n")

    load1, load5, _ = os.getloadavg()
    print(f"# ChargeBridge bench: DFT^P03 with {LINES} FT1 each, fsync on, "
          f"{os.cpu_count()} CPUs, load average at start {load1:.2f} / {load5:.2f}\n")
    print("| configuration | conns | messages | run | msg/s | p50 ms | p99 ms | NACKs "
          "| all charges after s | engine/ceiling |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tls_dir:
        tls = make_tls(Path(tls_dir)) if any(s.tls for s in scenarios) else None
        for s in scenarios:
            messages = [make_dft(i, lines=LINES) for i in range(s.messages)]
            head = f"| {s.label} | {s.connections} | {s.messages:,} |"
            base = ceiling(messages, s, tls)
            print(f"{head} ceiling | {base.rate:,.0f} | {base.percentile(50) * 1e3:.2f} | "
                  f"{base.percentile(99) * 1e3:.2f} | {base.nacks} | - | 1.00 |", flush=True)
            got = engine_run(messages, s, tls)
            r = got.load
            incomplete = "" if got.charges == s.messages * LINES else (
                f" **{got.charges:,} of {s.messages * LINES:,} charges, {got.statuses}**")
            charged = "- (no processor)" if s.role == "ingest" else (
                f"{got.charges_after:.1f} ({s.messages / got.charges_after:,.0f} msg/s)"
                f"{incomplete}")
            print(f"{head} engine | {r.rate:,.0f} | {r.percentile(50) * 1e3:.2f} | "
                  f"{r.percentile(99) * 1e3:.2f} | {r.nacks} | {charged} | "
                  f"{r.rate / base.rate:.2f} |", flush=True)
    if not args.no_mapping:
        parse_us, apply_us, both_us = mapping_cost()
        print(f"\nmapping cost, standard mappings/dft_p03.yaml on a {LINES}-FT1 DFT: "
              f"{apply_us:.1f} us per FT1 (target 20); parse {parse_us:.1f} us per message; "
              f"parse + map {both_us:.1f} us per FT1")
    load1, load5, _ = os.getloadavg()
    print(f"\nload average at end {load1:.2f} / {load5:.2f}")


if __name__ == "__main__":
    main()
