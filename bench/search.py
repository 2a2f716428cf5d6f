"""Message search on a store of a million messages: each filter of
SqlStore.search_messages timed (median of several runs) with the plan the database chose.

The store is filled in big batches inside the store's own transaction() with a realistic
spread: six channels of very different volume, mostly PROCESSED with some FILTERED /
ERROR / RECEIVED, HL7 and FHIR message types, a unique control id per message, 200,000
patients (MRNs), and received_at rising over 90 days with jitter. Raw bytes are small.

    python -m bench.search                        # SQLite, 1,000,000 messages
    python -m bench.search --store-url postgresql://postgres@127.0.0.1:5432/test
    python -m bench.search --messages 200000 --runs 9 --analyze

A PostgreSQL run uses a private schema bench_<random>, dropped afterwards. PostgreSQL is
ANALYZEd after the load (autovacuum would do so within a minute); SQLite is searched as
the engine leaves it (its upkeep runs a bounded ANALYZE hourly) unless --analyze.
A filter whose plan scans the
table (SQLite `SCAN messages` without an index, PostgreSQL `Seq Scan`) or that takes
longer than --slow-ms is listed at the end.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.store import SqlStore, open_store

CHANNELS = [("ehr_dft", 55), ("ehr_adt", 25), ("fhir_in", 10), ("http_hl7", 6),
            ("file_drop", 3), ("legacy_lab", 1)]
STATUSES = [("PROCESSED", 9400), ("FILTERED", 400), ("ERROR", 150), ("RECEIVED", 50)]
TYPES = {"ehr_dft": ["DFT^P03"], "ehr_adt": ["ADT^A04", "ADT^A08", "ADT^A01", "ADT^A03"],
         "fhir_in": ["Bundle", "ChargeItem", "Encounter"], "http_hl7": ["DFT^P03", "ADT^A08"],
         "file_drop": ["DFT^P03"], "legacy_lab": ["DFT^P03", "ORU^R01"]}
PATIENTS = 200_000
DAYS = 90
START = 1_700_000_000.0  # received_at of the first message
INSERT = ("INSERT INTO messages (channel, transport, peer, sender, control_id, message_type, "
          "mrn, status, reason, received_at, updated_at, raw, meta, counts) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', '{}')")


def _weighted(pairs: list[tuple[str, int]], rng: random.Random, n: int) -> list[str]:
    names, weights = zip(*pairs, strict=True)
    return rng.choices(names, weights, k=n)


def rows(count: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """The message rows, in id order, as INSERT parameters."""
    rng = random.Random(seed)
    span = DAYS * 86400.0
    batch = 50_000
    for base in range(0, count, batch):
        n = min(batch, count - base)
        channels = _weighted(CHANNELS, rng, n)
        statuses = _weighted(STATUSES, rng, n)
        for k in range(n):
            i = base + k
            channel = channels[k]
            status = statuses[k]
            at = START + span * i / count + rng.uniform(-30.0, 30.0)
            mtype = rng.choice(TYPES[channel])
            yield (channel, "mllp", "10.0.0.5:40000", f"{channel.upper()}^FAC",
                   f"CTL{i:010d}", mtype, f"MRN{rng.randrange(PATIENTS):07d}", status,
                   "mapping failed: FT1-7 not in chargemaster" if status == "ERROR" else None,
                   at, at + 1.0, b"MSH|^~\\&|...", )


def build(store: SqlStore, count: int, batch: int = 50_000) -> float:
    """Insert `count` messages in transactions of `batch`; returns seconds taken."""
    started = time.perf_counter()
    sql = store._sql(INSERT)
    pending: list[tuple[Any, ...]] = []
    for row in rows(count):
        pending.append(row)
        if len(pending) == batch:
            with store.transaction() as cur:
                cur.executemany(sql, pending)
            pending = []
    if pending:
        with store.transaction() as cur:
            cur.executemany(sql, pending)
    return time.perf_counter() - started


@dataclass
class Case:
    name: str
    kwargs: dict[str, Any]


def cases(count: int) -> list[Case]:
    """The searches an operator makes, each filter alone, combined, and deep pages."""
    span = DAYS * 86400.0
    mid = START + span / 2
    mid_id = count // 2
    return [
        Case("no filter (newest page)", {}),
        Case("channel (busy: ehr_dft)", {"channel": "ehr_dft"}),
        Case("channel (rare: legacy_lab)", {"channel": "legacy_lab"}),
        Case("status ERROR", {"status": "ERROR"}),
        Case("status RECEIVED", {"status": "RECEIVED"}),
        Case("time range (1 hour, mid-store)", {"since": mid, "until": mid + 3600}),
        Case("time range (1 day, oldest)", {"since": START, "until": START + 86400}),
        Case("time range (30 days)", {"since": mid, "until": mid + 30 * 86400}),
        Case("control id", {"control_id": f"CTL{mid_id:010d}"}),
        Case("message type ADT^A08", {"message_type": "ADT^A08"}),
        Case("message type (rare: ORU^R01)", {"message_type": "ORU^R01"}),
        Case("MRN", {"mrn": "MRN0123456"}),
        Case("MRN (unknown)", {"mrn": "MRN9999999"}),
        Case("channel + status ERROR", {"channel": "ehr_dft", "status": "ERROR"}),
        Case("channel + status + 1 day", {"channel": "ehr_dft", "status": "ERROR",
                                          "since": mid, "until": mid + 86400}),
        Case("channel + message type", {"channel": "http_hl7", "message_type": "ADT^A08"}),
        Case("channel + message type (no match)", {"channel": "ehr_dft",
                                                   "message_type": "ADT^A08"}),
        Case("channel + 30 days", {"channel": "ehr_adt", "since": mid,
                                   "until": mid + 30 * 86400}),
        Case("message type + 1 day", {"message_type": "ADT^A08", "since": mid,
                                      "until": mid + 86400}),
        Case("MRN + channel", {"mrn": "MRN0123456", "channel": "ehr_dft"}),
        Case("keyset: page deep (before_id = 10% from oldest)",
             {"before_id": count // 10}),
        Case("keyset: channel, deep page", {"channel": "ehr_adt", "before_id": count // 10}),
        Case("keyset: status ERROR, deep page", {"status": "ERROR",
                                                 "before_id": count // 10}),
        Case("keyset: rare channel, deep page", {"channel": "legacy_lab",
                                                 "before_id": count // 10}),
    ]


def captured_sql(store: SqlStore, kwargs: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """The statement search_messages runs for `kwargs` (recorded, then run for real)."""
    seen: list[tuple[str, tuple[Any, ...]]] = []
    original: Callable[..., list[Any]] = store._query

    def recording(sql: str, params: Any = ()) -> list[Any]:
        seen.append((sql, tuple(params)))
        return original(sql, params)

    store._query = recording  # type: ignore[method-assign]
    try:
        store.search_messages(**kwargs)
    finally:
        del store._query  # back to the class's method
    return seen[-1]


def plan(store: SqlStore, sql: str, params: tuple[Any, ...], postgres: bool) -> list[str]:
    if postgres:
        statement = "EXPLAIN (COSTS OFF) " + store._sql(sql)
    else:
        statement = "EXPLAIN QUERY PLAN " + sql
    with store.transaction() as cur:
        cur.execute(statement, params)
        found = cur.fetchall()
    return [str(r[0]) for r in found] if postgres else [str(r[-1]) for r in found]


def scans(lines: list[str], postgres: bool, filtered: bool) -> bool:
    """A plan that reads the whole table. Walking the primary key newest-first with no
    filter stops after one page, so only a filtered search can scan."""
    if not filtered:
        return False
    if postgres:
        return any("Seq Scan" in line for line in lines)
    return any(line.startswith("SCAN messages") and "USING" not in line for line in lines)


def timed(store: SqlStore, kwargs: dict[str, Any], runs: int) -> tuple[float, int]:
    """(median ms, rows) of `runs` calls after one warm-up."""
    found = store.search_messages(**kwargs)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        store.search_messages(**kwargs)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times), len(found)


def measure(store: SqlStore, label: str, count: int, runs: int, slow_ms: float,
            postgres: bool) -> list[str]:
    """Prints the table and plans for one backend; returns the filters that scan or are slow."""
    print(f"\n## {label}: {count:,} messages\n")
    print("| search | median ms | rows | index used |")
    print("|---|---|---|---|")
    problems = []
    plans = []
    for case in cases(count):
        ms, n = timed(store, case.kwargs, runs)
        sql, params = captured_sql(store, case.kwargs)
        lines = plan(store, sql, params, postgres)
        used = ", ".join(sorted({w for line in lines for w in line.replace("(", " ").split()
                                 if w.startswith("messages_") or w == "messages_pkey"}))
        if not postgres and any("INTEGER PRIMARY KEY" in line for line in lines):
            used = ", ".join(filter(None, [used, "rowid"]))
        flag = scans(lines, postgres, bool(case.kwargs))
        print(f"| {case.name} | {ms:.2f} | {n} | {used or '-'}{' **SCAN**' if flag else ''} |",
              flush=True)
        plans.append((case.name, lines))
        if flag or ms > slow_ms:
            problems.append(f"{label}: {case.name}: {ms:.1f} ms"
                            + (" (plan scans the table)" if flag else ""))
    print("\nPlans:\n")
    for name, lines in plans:
        print(f"- {name}: " + " / ".join(line.strip() for line in lines))
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7, help="Timed runs per search (median).")
    parser.add_argument("--store-url", default=None,
                        help="postgresql://... to measure PostgreSQL too (private schema).")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only.")
    parser.add_argument("--analyze", action="store_true",
                        help="ANALYZE the SQLite store before searching.")
    parser.add_argument("--slow-ms", type=float, default=50.0,
                        help="A search slower than this is reported.")
    args = parser.parse_args()
    problems: list[str] = []
    with ExitStack() as stack:
        if not args.no_sqlite:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            store = open_store(f"sqlite:///{tmp / 'search.db'}")
            took = build(store, args.messages)
            print(f"SQLite store built: {args.messages:,} messages in {took:.1f} s "
                  f"({(tmp / 'search.db').stat().st_size / 1e6:,.0f} MB)")
            if args.analyze:
                with store.transaction() as cur:
                    cur.execute("ANALYZE")
            else:
                store.optimize()  # the bounded ANALYZE the engine's upkeep runs hourly
            problems += measure(store, "SQLite" + (" (ANALYZEd)" if args.analyze else ""),
                                args.messages, args.runs, args.slow_ms, postgres=False)
            store.close()
        if args.store_url:
            from bench.run import private_schema

            url = stack.enter_context(private_schema(args.store_url))
            pg = open_store(url)
            took = build(pg, args.messages)
            with pg.transaction() as cur:
                cur.execute("ANALYZE messages")
            print(f"\nPostgreSQL store built: {args.messages:,} messages in {took:.1f} s")
            problems += measure(pg, "PostgreSQL", args.messages, args.runs, args.slow_ms,
                                postgres=True)
            getattr(pg, "dispose", pg.close)()
    print("\n" + ("Scans or slow searches:\n" + "\n".join(f"- {p}" for p in problems)
                  if problems else f"No search scans the table or takes over {args.slow_ms} ms."))


if __name__ == "__main__":
    main()
