"""Store benchmark: SQLite beside PostgreSQL in the same run, on the same records.

- journal: N concurrent senders, each waiting for its message's durable commit (as an
  MLLP connection waits for its ACK), through the group committer;
- process: claim in batches of 200 + complete each message (no mapping), i.e. the
  store's share of the processor's cost;
- two nodes (PostgreSQL only): two processes journaling into one schema at once.

`python -m bench.store_bench [--messages 20000] [--senders 8,64] [--pg-url URL]`
prints a Markdown table. Durable settings throughout (fsync / synchronous_commit on).
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

from engine.store.base import SqlStore
from engine.store.group_commit import GroupCommitter
from engine.store.postgres import PostgresStore
from engine.store.records import PROCESSED, InboundRecord, MessageOutcome
from engine.store.sqlite import SqliteStore

RAW = (b"MSH|^~\\&|EHR|FAC|CB|BILL|20240315143000||DFT^P03|X|P|2.5.1\rEVN|P03\r"
       + b"PID|1||MRN1^^^FAC^MR||Doe^J\rFT1|1|T1||20240315||CG|99213|||1|125.00\r" * 2)


def journal_rate(store: SqlStore, messages: int, senders: int) -> float:
    """Messages per second journaled durably by `senders` concurrent waiting senders."""
    committer = GroupCommitter(store)
    per = messages // senders

    def sender(lane: int) -> None:
        for i in range(per):
            committer.submit(InboundRecord(
                channel="bench", raw=RAW, transport="mllp", sender="EHR^FAC",
                control_id=f"{lane}-{i}-{uuid.uuid4().hex[:8]}",
                duplicate_window_seconds=86400)).result()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(senders)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    committer.close()
    return per * senders / elapsed


def process_rate(store: SqlStore) -> float:
    """Messages per second claimed (200 at a time) and completed, until none are left."""
    done = 0
    started = time.perf_counter()
    while batch := store.claim_messages("bench:process", 200, 60.0):
        for message in batch:
            store.complete_message(MessageOutcome(message.id, PROCESSED, counts={"x": 1}))
        done += len(batch)
    return done / (time.perf_counter() - started)


def _node(url: str, messages: int, senders: int, out: multiprocessing.Queue[float]) -> None:
    store = PostgresStore(url)
    out.put(journal_rate(store, messages, senders))
    store.dispose()


def two_node_rate(url: str, messages: int, senders: int) -> float:
    """Total journal rate of two processes sharing one PostgreSQL schema."""
    results: multiprocessing.Queue[float] = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_node, args=(url, messages // 2, senders, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    rates = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    return sum(rates)


def _with_pg_schema(pg_url: str, run: Callable[[str], list[str]]) -> list[str]:
    schema = f"cbbench_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in pg_url else "?"
    try:
        return run(f"{pg_url}{sep}schema={schema}")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--senders", default="8,64", help="Concurrent senders, comma list.")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    senders = [int(s) for s in args.senders.split(",")]
    rows = ["| backend | senders | journal msg/s | claim+complete msg/s |",
            "|---|---|---|---|"]
    for count in senders:
        with tempfile.TemporaryDirectory() as tmp:
            store = SqliteStore(Path(tmp) / "bench.db")
            store.migrate()
            rows.append(f"| SQLite | {count} | {journal_rate(store, args.messages, count):,.0f}"
                        f" | {process_rate(store):,.0f} |")
            store.close()

        def pg_one(url: str, count: int = count) -> list[str]:
            store = PostgresStore(url)
            store.migrate()
            line = (f"| PostgreSQL, 1 node | {count} | "
                    f"{journal_rate(store, args.messages, count):,.0f} | "
                    f"{process_rate(store):,.0f} |")
            store.dispose()
            return [line]

        def pg_two(url: str, count: int = count) -> list[str]:
            setup = PostgresStore(url)
            setup.migrate()
            setup.dispose()
            rate = two_node_rate(url, args.messages, count)
            return [f"| PostgreSQL, 2 nodes | {count} each | {rate:,.0f} (sum) | |"]

        rows += _with_pg_schema(args.pg_url, pg_one)
        rows += _with_pg_schema(args.pg_url, pg_two)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
