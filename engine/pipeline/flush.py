"""On-demand batch release: `chargebridge flush [DESTINATION]` and its store mailbox.

The CLI runs in a different process from the engine, so a request is a row in
`flush_requests`; the delivery runner takes the pending rows of a destination at the start
of its pass (FlushInbox.take) and treats the destination as due, so a batching
destination writes what is waiting now instead of at its next batch_seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from engine.store.base import SqlStore

__all__ = ["FlushInbox", "pending_flush_requests", "register", "request_flush"]


def request_flush(store: SqlStore, destinations: Sequence[str], who: str) -> list[int]:
    """Record one flush request per destination (one transaction); returns their ids."""
    now = time.time()
    ids: list[int] = []
    with store.transaction() as cur:
        for name in destinations:
            row = store._exec(cur, "INSERT INTO flush_requests (destination, requested_at, "
                                   "requested_by) VALUES (?, ?, ?) RETURNING id",
                              (name, now, who)).fetchone()
            ids.append(int(row[0]))
    return ids


def pending_flush_requests(store: SqlStore, ids: Sequence[int]) -> int:
    """How many of these requests no runner has taken yet."""
    if not ids:
        return 0
    marks = ", ".join("?" for _ in ids)
    rows = store._query(f"SELECT COUNT(*) FROM flush_requests WHERE id IN ({marks}) "
                        "AND consumed_at IS NULL", tuple(ids))
    return int(rows[0][0])


class FlushInbox:
    """Takes a destination's pending flush requests; looks at most every `poll_seconds`
    per destination so an idle runner does not query the store on every pass."""

    def __init__(self, store: SqlStore, poll_seconds: float = 0.25) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self._next_look: dict[str, float] = {}

    def take(self, destination: str) -> bool:
        """True when a flush was requested for `destination` since the last take."""
        now = time.monotonic()
        if now < self._next_look.get(destination, 0.0):
            return False
        self._next_look[destination] = now + self.poll_seconds
        rows = self.store._query("SELECT id FROM flush_requests WHERE destination = ? "
                                 "AND consumed_at IS NULL", (destination,))
        if not rows:
            return False
        with self.store.transaction() as cur:
            for (request_id,) in rows:
                self.store._exec(cur, "UPDATE flush_requests SET consumed_at = ? "
                                      "WHERE id = ? AND consumed_at IS NULL",
                                 (time.time(), request_id))
        return True


def cmd_flush(args: argparse.Namespace) -> int:
    """Ask the engine to write the pending batch of one destination, or of every one."""
    from engine.config import load_config
    from engine.store import open_store

    config = load_config(args.config)
    known = [d.name for d in config.destinations]
    if args.destination is not None and args.destination not in known:
        print(f"error: no destination {args.destination!r} in {args.config}; known: "
              f"{', '.join(known) or 'none'}", file=sys.stderr)
        return 1
    names = [args.destination] if args.destination is not None else known
    store = open_store(config.store.url, fsync=config.store.fsync,
                       base_dir=str(config.base_dir))
    try:
        ids = request_flush(store, names, who="cli")
        print(f"flush requested for {', '.join(names) or 'no destination'}")
        if args.wait > 0:
            deadline = time.monotonic() + args.wait
            while pending_flush_requests(store, ids) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pending_flush_requests(store, ids):
                print(f"error: no engine took the request within {args.wait:g}s "
                      "(is it running with this store?)", file=sys.stderr)
                return 1
            print("taken by the engine")
    finally:
        store.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `chargebridge flush` to the CLI's subcommands."""
    help_text = "Write the pending batch of a destination now (e.g. an 837P file)."
    p = sub.add_parser("flush", help=help_text, description=help_text)
    p.set_defaults(func=cmd_flush)
    p.add_argument("destination", nargs="?", default=None,
                   help="Destination name; every destination when left out.")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="Wait until the engine takes the request; exit 1 if it does not.")
