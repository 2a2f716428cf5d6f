"""The processor: takes RECEIVED messages from the store and decides what they become.

parse -> (ADT: update context) -> map -> scrub -> route. Each message ends PROCESSED,
FILTERED or ERROR in one store transaction together with its charges and deliveries, so
a crash anywhere re-runs the whole message and deterministic charge ids make the re-run
harmless. A message that fails is ERROR with its reason and never blocks the next one.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import structlog

from engine.charge import Charge, Finding
from engine.config.models import ChannelConfig
from engine.context import enrich
from engine.errors import ChargeBridgeError
from engine.hl7.reader import Message, parse
from engine.pipeline.corrections import apply_corrections
from engine.store.base import SqlStore
from engine.store.records import (
    ERROR,
    FILTERED,
    HELD,
    PROCESSED,
    QUEUED,
    READY,
    ChargeRecord,
    MessageOutcome,
    StoredMessage,
)

log = structlog.get_logger("chargebridge.processor")


@dataclass
class ChannelPlan:
    """What the processor needs to know about one channel."""

    config: ChannelConfig
    mapping_path: str | None
    destinations: list[Any] = field(default_factory=list)  # engine.connectors.Destination


class Processor:
    """Maps and scrubs messages for every channel of one engine."""

    def __init__(self, store: SqlStore, plans: dict[str, ChannelPlan], mappings: Any,
                 scrubber: Any, *, owner: str = "node-1", message_hooks: Any = None) -> None:
        self.store = store
        self.plans = plans
        self.mappings = mappings  # engine.mapping.MappingRegistry
        self.scrubber = scrubber  # engine.scrub.Scrubber
        self.owner = owner
        # message_hooks: callables (stored, msg, plan) -> MessageOutcome | None, tried first
        # (ADT context updates, FHIR resources): a hook that answers owns the message.
        self.message_hooks = list(message_hooks or [])
        # Duplicate keys of charges decided in this batch but not yet committed.
        self._pending_keys: set[str] = set()

    def run_once(self, limit: int = 10) -> int:
        """Claim and process one batch; returns how many messages were processed.

        The batch's outcomes are stored together in one transaction. A message with a
        credit needs what came before it committed (corrections look up the charge it
        reverses), so the outcomes before it are stored first and it is decided again.
        """
        claimed = self.store.claim_messages(self.owner, limit, lease_seconds=120.0)
        pending: list[tuple[StoredMessage, MessageOutcome]] = []
        self._pending_keys = set()
        for stored in claimed:
            outcome = self.process(stored)
            if pending and any(r.charge.transaction_type == "credit" for r in outcome.charges):
                self._store(pending)
                pending = []
                outcome = self.process(stored)
            pending.append((stored, outcome))
            self._pending_keys.update(r.duplicate_key for r in outcome.charges
                                      if r.duplicate_key)
        self._store(pending)
        return len(claimed)

    def _store(self, pending: list[tuple[StoredMessage, MessageOutcome]]) -> None:
        self._pending_keys = set()
        if not pending:
            return
        stored_ok = self.store.complete_messages([o for _, o in pending], self.owner)
        for (stored, outcome), ok in zip(pending, stored_ok, strict=True):
            if not ok:
                # Our lease ran out and another processor took the message over.
                log.warning("message.lease_lost", channel=stored.channel,
                            message_id=stored.id)
                continue
            emit = log.warning if outcome.status == ERROR else log.debug
            emit("message.processed", channel=stored.channel, message_id=stored.id,
                 control_id=outcome.control_id, status=outcome.status,
                 count=len(outcome.charges))  # the reason may quote data: store only

    def process(self, stored: StoredMessage) -> MessageOutcome:
        """Decide one message's fate; never raises for a bad message."""
        try:
            return self._process(stored)
        except ChargeBridgeError as exc:
            return MessageOutcome(stored.id, ERROR, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug must not block the queue behind this message
            log.error("message.process_crashed", message_id=stored.id, channel=stored.channel,
                      error=type(exc).__name__)
            return MessageOutcome(stored.id, ERROR, f"internal error: {type(exc).__name__}: "
                                                    f"{exc}")

    def _process(self, stored: StoredMessage) -> MessageOutcome:
        plan = self.plans.get(stored.channel)
        if plan is None:
            return MessageOutcome(stored.id, ERROR, f"channel {stored.channel!r} is not "
                                                    "configured on this engine")
        msg: Any = parse(stored.raw) if stored.transport != "fhir" else None
        for hook in self.message_hooks:
            answer = hook(stored, msg, plan)
            if answer is not None:
                return answer  # type: ignore[no-any-return]
        if plan.mapping_path is None:
            return MessageOutcome(stored.id, PROCESSED, "no mapping configured",
                                  control_id=stored.control_id)
        mapping = self.mappings.get(plan.mapping_path)
        result = mapping.apply(msg, channel=stored.channel)
        mrn = msg.get("PID-3.1") if isinstance(msg, Message) else None
        if result.filtered:
            return MessageOutcome(stored.id, FILTERED, result.filtered, mrn=mrn,
                                  counts={"lines_in": result.lines_in, "charges": 0,
                                          "dropped": len(result.dropped)})
        mapped = [(m.charge, list(m.findings)) for m in result.charges]
        if isinstance(msg, Message):
            # Fill demographics/coverage from the ADT context; flag mismatches.
            mapped = enrich(self.store, plan.config, mapped)
        return self.route(stored, plan, mapped, result.lines_in, result.dropped, mrn)

    def route(self, stored: StoredMessage, plan: ChannelPlan,
              mapped: list[tuple[Charge, list[Finding]]], lines_in: int,
              dropped: list[tuple[str, str]], mrn: str | None) -> MessageOutcome:
        """Scrub mapped charges and decide each one's status and destinations."""
        since = time.time() - self.scrubber.duplicate_window_seconds

        pending_keys = self._pending_keys
        # One query for the message's charges; earlier messages of this batch are not
        # committed yet, so their keys come from pending_keys.
        seen_before = self.store.existing_duplicates(
            sorted({self.scrubber.duplicate_key(c) for c, _ in mapped
                    if c.transaction_type != "credit"}), stored.id, since)

        def is_duplicate(key: str) -> bool:
            return key in pending_keys or key in seen_before

        scrub_findings = self.scrubber.scrub([c for c, _ in mapped], is_duplicate=is_duplicate)
        records = []
        for charge, findings in mapped:
            findings = findings + scrub_findings.get(charge.charge_id, [])
            targets = [d.name for d in plan.destinations if d.accepts(charge)]
            if any(f.severity == "hold" for f in findings):
                status = HELD
            elif targets:
                status = QUEUED
            else:
                status = READY
            records.append(ChargeRecord(charge, status, findings, targets,
                                        self.scrubber.duplicate_key(charge)))
        # Credits at claim destinations: void what was sent, cancel what was not.
        apply_corrections(self.store, plan.destinations, records)
        statuses = Counter(r.status for r in records)
        counts = {"lines_in": lines_in, "charges": len(records), "held": statuses[HELD],
                  "queued": statuses[QUEUED], "ready": statuses[READY],
                  "dropped": len(dropped),
                  "dropped_reasons": dict(Counter(reason for _, reason in dropped))}
        held_reasons = "; ".join(sorted({f.message for r in records for f in r.findings
                                         if f.severity == "hold"}))
        return MessageOutcome(stored.id, PROCESSED, held_reasons or None, records, counts,
                              mrn=mrn, control_id=stored.control_id)
