"""The delivery runner: moves QUEUED deliveries through their destination.

For each destination: ask `due()`, claim a batch under a lease, give it a batch id
(recorded before the destination acts, so a crash re-delivers the same batch id and an
idempotent destination recognises finished work), deliver, record outcomes. RETRY
outcomes come back later with exponential backoff and jitter; one failing delivery never
blocks the others.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from engine.connectors import DeliveryOutcome, Destination, QueuedDelivery
from engine.pipeline.corrections import previous_result
from engine.pipeline.flush import FlushInbox
from engine.store.base import SqlStore
from engine.store.records import FAILED, QUEUED, SENT, DeliveryRow, DeliveryUpdate

log = structlog.get_logger("chargebridge.delivery")


def backoff_seconds(attempts: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter: uniform in [base/2, min(cap, base * 2^n)]."""
    ceiling = min(cap, base * (2 ** min(attempts, 20)))
    return random.uniform(min(base / 2, ceiling), ceiling)


@dataclass
class StoreContext:
    """The DestinationContext the engine lends destinations."""

    store: SqlStore
    out_dir: Path

    def next_control_number(self, key: str) -> int:
        return self.store.next_counter(key)


class DeliveryRunner:
    """Runs every destination of one engine node."""

    def __init__(self, store: SqlStore, destinations: list[Destination], *,
                 owner: str = "node-1", lease_seconds: float = 300.0) -> None:
        self.store = store
        self.destinations = destinations
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.flush_requested: set[str] = set()
        self.flush_inbox = FlushInbox(store)  # `chargebridge flush` from another process

    def run_once(self) -> int:
        """One pass over every destination; returns how many deliveries were handled."""
        handled = 0
        for destination in self.destinations:
            handled += self.run_destination(destination)
        return handled

    def run_destination(self, destination: Destination) -> int:
        if self.flush_inbox.take(destination.name):
            self.flush_requested.add(destination.name)
        pending, oldest = self.store.pending_deliveries(destination.name)
        flush = destination.name in self.flush_requested
        age = time.time() - oldest if oldest is not None else 0.0
        if not destination.due(pending, age, flush):
            return 0
        self.flush_requested.discard(destination.name)
        with self.store.batch_lock(destination.name) as held:
            if not held:  # another node is assembling this destination's batch
                return 0
            rows = self.store.claim_deliveries(destination.name, self.owner,
                                               destination.batch_size, self.lease_seconds)
            # Rows that already carry a batch id were claimed before a crash: they go out
            # again under that same id (so the destination recognises finished work);
            # only rows without one form a new batch.
            groups: dict[int | None, list[DeliveryRow]] = {}
            for row in rows:
                groups.setdefault(row.batch_id, []).append(row)
            for batch_id, members in groups.items():
                if batch_id is None:
                    batch_id = self.store.assign_batch([r.id for r in members])
                self._deliver(destination, members, batch_id)
        return len(rows)

    def _deliver(self, destination: Destination, rows: list[DeliveryRow],
                 batch_id: int) -> None:
        queued = [QueuedDelivery(r.id, r.charge_id, r.charge, r.attempts, r.kind,
                                 r.previous or previous_result(self.store, r))
                  for r in rows]
        try:
            outcomes = destination.deliver_batch(queued, batch_id)
        except Exception as exc:  # a destination bug: retry later, never lose the batch
            log.error("delivery.destination_crashed", destination=destination.name,
                      batch_id=batch_id, error=type(exc).__name__)
            outcomes = [DeliveryOutcome(q.delivery_id, "RETRY", f"destination error: {exc}")
                        for q in queued]
        attempts = {r.id: r.attempts for r in rows}
        self.store.finish_deliveries([self._update(o, attempts) for o in outcomes])
        for outcome in outcomes:
            # The outcome's detail and response stay in the store: a PM system's answer or
            # a validator message may quote patient data, so the log carries ids only.
            emit = log.warning if outcome.status == "FAILED" else log.debug
            emit("delivery.finished", destination=destination.name,
                 delivery_id=outcome.delivery_id, status=outcome.status, batch_id=batch_id)

    def _update(self, outcome: DeliveryOutcome, attempts: dict[int, int]) -> DeliveryUpdate:
        if outcome.status == "RETRY":
            delay = outcome.retry_after_seconds
            if delay is None:
                delay = backoff_seconds(attempts.get(outcome.delivery_id, 0))
            return DeliveryUpdate(outcome.delivery_id, QUEUED, outcome.detail,
                                  time.time() + delay, outcome.response, outcome.result)
        status = SENT if outcome.status == "SENT" else FAILED
        return DeliveryUpdate(outcome.delivery_id, status, outcome.detail, None,
                              outcome.response, outcome.result)
