"""The processor hook for FHIR messages (transport "fhir"): ChargeItems become charges.

Other resource types (Patient, Encounter, Coverage ...) were stored in the resource store
when they arrived; their journal message is PROCESSED without a mapping.

A ChargeItem's charge id comes from its identifier (system|value), or its logical id when
it has none, so a resent or updated ChargeItem always lands on the same charge:
  - billable (or any status the mapping keeps): references are resolved from the resource
    store (an unresolved one holds the charge with a finding), the channel's mapping runs on
    the context (engine.fhir.context) and the processor scrubs and routes the charges;
  - entered-in-error, or a status the mapping drops, for a charge that already went out
    (QUEUED/SENT, or any delivery sent) -> a credit with its own deterministic id;
  - the same before it went out -> the charge is HELD with a finding so it is never sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import structlog

from engine.charge import Charge, Finding, make_charge_id
from engine.fhir.context import build_context
from engine.fhir.service import TRANSPORT
from engine.store.base import SqlStore
from engine.store.records import (
    ERROR,
    FILTERED,
    HELD,
    PROCESSED,
    QUEUED,
    READY,
    SENT,
    ChargeRecord,
    MessageOutcome,
)

__all__ = ["FhirChargeHook", "charge_key"]

log = structlog.get_logger("chargebridge.fhir")

_WITHDRAWN = "entered-in-error"


def charge_key(item: dict[str, Any]) -> str:
    """What identifies a ChargeItem's charge: its first identifier, else ChargeItem/id.

    The same key the mapping language uses for a FHIR line id.
    """
    for ident in item.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("value"):
            system = ident.get("system") or ""
            return f"{system}|{ident['value']}" if system else str(ident["value"])
    return f"ChargeItem/{item.get('id', '')}"


class FhirChargeHook:
    """Message hook (stored, msg, plan) -> MessageOutcome | None for transport "fhir".

    It needs the processor (mappings, scrub and routing): the runtime calls
    `bind(processor)`; unbound, it builds its own mapping registry and scrubber from the
    config on first use.
    """

    def __init__(self, config: Any, store: SqlStore, processor: Any = None) -> None:
        self.config = config
        self.store = store
        self.processor = processor
        self._lock = threading.Lock()
        self._last_reload = 0.0
        self._own = False  # True when the processor was built here (reload mappings)

    def bind(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, stored: Any, msg: Any, plan: Any) -> MessageOutcome | None:
        if stored.transport != TRANSPORT:
            return None
        try:
            resource = json.loads(stored.raw)
        except ValueError:
            return MessageOutcome(stored.id, ERROR, "journaled FHIR body is not JSON",
                                  control_id=stored.control_id)
        if not isinstance(resource, dict) or resource.get("resourceType") != "ChargeItem":
            return MessageOutcome(stored.id, PROCESSED, None, control_id=stored.control_id,
                                  counts={"lines_in": 0})
        return self._charge_item(stored, plan, resource)

    # -- ChargeItem ----------------------------------------------------------------
    def _charge_item(self, stored: Any, plan: Any, item: dict[str, Any]) -> MessageOutcome:
        channel = stored.channel
        key = charge_key(item)
        charge_id = make_charge_id(channel, "ChargeItem", key)
        credit_id = make_charge_id(channel, "ChargeItem", f"{key}#credit")
        provenance = {"resource": f"ChargeItem/{item.get('id', '')}",
                      "version_id": (item.get("meta") or {}).get("versionId")}
        existing = self.store.get_charge(charge_id)
        resolved = build_context(self.store, item)
        if item.get("status") == _WITHDRAWN:
            return self._withdraw(stored, plan, existing, credit_id, provenance, resolved.mrn,
                                  f"ChargeItem status {_WITHDRAWN}")
        if plan.mapping_path is None:
            return MessageOutcome(stored.id, PROCESSED, "no mapping configured",
                                  control_id=stored.control_id, mrn=resolved.mrn)
        processor = self._processor()
        mapping = processor.mappings.get(plan.mapping_path)
        result = mapping.apply({**resolved.context, "control_id": stored.control_id},
                               channel=channel)
        reason = None
        if result.filtered or not result.charges:
            reason = result.filtered or "; ".join(sorted({r for _, r in result.dropped}))
            if existing is not None:
                return self._withdraw(stored, plan, existing, credit_id, provenance,
                                      resolved.mrn, reason or "the mapping dropped it")
            if result.filtered:
                return MessageOutcome(stored.id, FILTERED, result.filtered, mrn=resolved.mrn,
                                      control_id=stored.control_id,
                                      counts={"lines_in": result.lines_in, "charges": 0,
                                              "dropped": len(result.dropped)})
        mapped: list[tuple[Charge, list[Finding]]] = []
        for index, m in enumerate(result.charges):
            update: dict[str, Any] = {"source": {**m.charge.source, **provenance}}
            if index == 0:
                update["charge_id"] = (credit_id if m.charge.transaction_type == "credit"
                                       else charge_id)
            mapped.append((m.charge.model_copy(update=update),
                           list(m.findings) + list(resolved.findings)))
        outcome = processor.route(stored, plan, mapped, result.lines_in, result.dropped,
                                  resolved.mrn)
        _drop_self_duplicates(self.store, outcome, existing,
                              processor.scrubber.duplicate_window_seconds)
        if reason:  # nothing mapped: say why the ChargeItem made no charge
            outcome.reason = reason
        if existing is not None and _went_out(self.store, charge_id, existing[1]):
            outcome.reason = ("ChargeItem changed after its charge went out: the change is not "
                              "sent (send entered-in-error, then a new ChargeItem)")
        return outcome

    def _withdraw(self, stored: Any, plan: Any, existing: Any, credit_id: str,
                  provenance: dict[str, Any], mrn: str | None, why: str) -> MessageOutcome:
        counts: dict[str, Any] = {"lines_in": 1, "charges": 0, "dropped": 1,
                                  "dropped_reasons": {why: 1}}
        if existing is None:
            return MessageOutcome(stored.id, PROCESSED, None, mrn=mrn, counts=counts,
                                  control_id=stored.control_id)
        charge, status, _, _ = existing
        if _went_out(self.store, charge.charge_id, status):
            # A credit's normalized amount is negative (as the HL7 mappings make it).
            amount = None if charge.amount is None else -abs(charge.amount)
            credit = charge.model_copy(update={
                "charge_id": credit_id, "transaction_type": "credit", "amount": amount,
                "source": {**charge.source, **provenance, "credit_of": charge.charge_id}})
            log.info("fhir.credit", message_id=stored.id, charge_id=charge.charge_id,
                     credit_id=credit_id)
            outcome: MessageOutcome = self._processor().route(stored, plan, [(credit, [])], 1,
                                                              [], mrn)
            return outcome
        finding = Finding(rule="fhir.withdrawn", severity="hold", field="status",
                          message=f"{why} before the charge went out: do not bill")
        record = ChargeRecord(charge, HELD, [finding])
        counts.update(charges=1, held=1)
        return MessageOutcome(stored.id, PROCESSED, finding.message, [record], counts,
                              mrn=mrn, control_id=stored.control_id)

    def _processor(self) -> Any:
        """The bound processor, or one built from the config for routing only."""
        with self._lock:
            if self.processor is None:
                from engine.mapping import MappingRegistry
                from engine.pipeline.processor import Processor
                from engine.scrub import Scrubber, ScrubSettings

                scrubber = Scrubber(ScrubSettings.model_validate(self.config.scrub))
                self.processor = Processor(self.store, {}, MappingRegistry(), scrubber)
                self._own = True
            elif getattr(self, "_own", False) and time.monotonic() - self._last_reload > 1.0:
                self._last_reload = time.monotonic()
                for problem in self.processor.mappings.check_for_changes():
                    log.warning("mapping.reload_refused", detail=problem)
            return self.processor


def _went_out(store: SqlStore, charge_id: str, status: str) -> bool:
    """A charge went out when it is QUEUED or SENT, or any of its deliveries was sent."""
    if status in (QUEUED, SENT):
        return True
    return any(d["status"] in (QUEUED, SENT) for d in store.deliveries_for_charge(charge_id))


def _drop_self_duplicates(store: SqlStore, outcome: MessageOutcome, existing: Any,
                          window_seconds: float) -> None:
    """An updated ChargeItem is the same charge, not a duplicate of itself: drop a
    duplicate finding the scrubber raised when the only earlier charge with that duplicate
    key is this very charge (an earlier version of the ChargeItem)."""
    if existing is None:
        return
    since = time.time() - window_seconds
    for record in outcome.charges:
        if record.charge.charge_id != existing[0].charge_id or record.duplicate_key is None:
            continue
        others = store._query("SELECT 1 FROM charges WHERE duplicate_key = ? AND charge_id <> ? "
                              "AND created_at >= ? LIMIT 1",
                              (record.duplicate_key, record.charge.charge_id, since))
        if others:
            continue
        kept = [f for f in record.findings if f.rule != "scrub.duplicate"]
        if len(kept) != len(record.findings):
            record.findings = kept
            if record.status == HELD and not any(f.severity == "hold" for f in kept):
                record.status = QUEUED if record.destinations else READY
    statuses = Counter(r.status for r in outcome.charges)
    outcome.counts.update(held=statuses[HELD], queued=statuses[QUEUED], ready=statuses[READY])
    outcome.reason = "; ".join(sorted({f.message for r in outcome.charges
                                       for f in r.findings if f.severity == "hold"})) or None
