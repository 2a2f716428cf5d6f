"""Corrections: what a credit does to the charge it reverses at claim destinations.

A credit (transaction_type "credit") reverses an earlier charge: the one a mapping names in
`Charge.source["corrects"]` (e.g. FHIR entered-in-error), else the oldest charge not yet
reversed with the same patient MRN, encounter id, procedure code and service date. The
match is written into the credit (`source["corrects"]`), so it is stored with it.

At each destination that bills claims (a Destination with `voids_claims = True`, the
837P writer), the original's delivery decides:
- SENT: the credit gets a delivery of kind "void"; the destination writes a frequency-8
  claim referring to the original claim (its result, looked up by `previous_result`).
  A void cancels a whole claim, so when the credits of this message reverse only some
  lines of the claim sent, the credit is HELD for a person instead (a replacement claim
  is needed; voiding would also cancel the lines still owed).
- QUEUED and not yet in a batch: the original is cancelled (delivery FAILED "cancelled by
  credit ...") and the credit goes nowhere there: nothing is billed.
- FAILED or never routed there: nothing was billed, so nothing to void.
- In a batch being written right now: waited for (up to `wait_seconds`), else HELD.
Other destinations (a PM API) get the credit as an ordinary delivery.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from engine.charge import Charge, Finding
from engine.store.base import SqlStore
from engine.store.records import (
    CANCEL_PREFIX,
    FAILED,
    HELD,
    QUEUED,
    READY,
    SENT,
    ChargeRecord,
    DeliveryRow,
)

__all__ = ["CANCEL_PREFIX", "CORRECTS", "apply_corrections", "cancel_marker",
           "previous_result"]

log = structlog.get_logger("chargebridge.corrections")

# Charge.source key: the charge_id a credit reverses.
CORRECTS = "corrects"


def cancel_marker(credit_id: str) -> str:
    """The detail a cancelled original delivery carries (and how a re-run recognises it)."""
    return f"{CANCEL_PREFIX}{credit_id} before it was sent"


def previous_result(store: SqlStore, row: DeliveryRow) -> dict[str, Any]:
    """The result kept from the SENT original delivery a correction refers to, at the same
    destination (claim id and file for 837P, pm_id for a PM API), plus `corrects`.

    A void/replacement of a charge refers to the charge's own original delivery; a credit
    to the one of the charge it reverses. Empty when there is none.
    """
    target = row.charge.source.get(CORRECTS)
    if not target and row.kind != "original":
        target = row.charge_id
    if not target or (row.kind == "original" and row.charge.transaction_type != "credit"):
        return {}
    rows = store._query("SELECT result FROM deliveries WHERE charge_id = ? AND destination = ? "
                        "AND kind = ? AND status = ?",
                        (str(target), row.destination, "original", SENT))
    if not rows:
        return {}
    result: dict[str, Any] = json.loads(rows[0][0] or "{}")
    result["corrects"] = str(target)
    return result


@dataclass
class _Original:
    """The delivery of a reversed charge to one destination."""

    delivery_id: int
    status: str
    detail: str | None
    result: dict[str, Any]
    batch_id: int | None
    in_flight: bool


def apply_corrections(store: SqlStore, destinations: Sequence[Any],
                      records: list[ChargeRecord], *, wait_seconds: float = 10.0) -> None:
    """Decide what each QUEUED credit in `records` does at the claim destinations it is
    routed to; updates the records (status, destinations, findings) in place, cancels
    unsent originals and queues voids. Safe to repeat when a message is processed again.
    """
    claim_destinations = {d.name for d in destinations if getattr(d, "voids_claims", False)}
    credits = [r for r in records if r.status == QUEUED and r.charge.transaction_type == "credit"
               and claim_destinations & set(r.destinations)]
    if not credits:
        return
    matched: dict[str, str] = {}
    taken: set[str] = set()
    for record in credits:
        charge = record.charge
        if _cancel_in_message(record, records, claim_destinations, taken):
            continue
        original = charge.source.get(CORRECTS) or _find_original(store, charge, taken)
        if not original:
            _hold(record, "credit_without_charge",
                  "this credit matches no charge (same patient MRN, encounter, procedure "
                  "code and service date); nothing is known to reverse")
            continue
        taken.add(str(original))
        charge.source[CORRECTS] = str(original)
        matched[charge.charge_id] = str(original)
    voided: set[str] = set()
    for name in sorted(claim_destinations):
        mine = [r for r in credits if r.status == QUEUED and name in r.destinations
                and r.charge.charge_id in matched]
        by_claim: dict[tuple[int | None, str], list[ChargeRecord]] = {}
        for record in mine:
            credit_id = record.charge.charge_id
            original_id = matched[credit_id]
            state = _settled(store, original_id, name, wait_seconds)
            if state is not None and state.status == QUEUED and not state.in_flight:
                state = _cancel(store, state, original_id, credit_id, name, wait_seconds)
            if state is None or state.status == FAILED:
                record.destinations.remove(name)
                why = ("it was cancelled before it was sent"
                       if state is not None and state.detail == cancel_marker(credit_id)
                       else "it was never billed there")
                record.findings.append(Finding(
                    rule="credit_cancels_unsent", severity="warn", field="transaction_type",
                    message=f"reverses charge {original_id}; {why} ({name}): nothing billed"))
            elif state.status == SENT:
                key = (state.batch_id, str(state.result.get("claim_id", "")))
                by_claim.setdefault(key, []).append(record)
            else:
                _hold(record, "credit_behind_delivery",
                      f"charge {original_id} is being delivered to {name}; process this "
                      "message again once it is SENT")
        for (batch_id, claim_id), group in by_claim.items():
            on_claim = _claim_charges(store, name, batch_id, claim_id)
            reversed_here = {matched[r.charge.charge_id] for r in group}
            if not on_claim <= reversed_here:
                for record in group:
                    _hold(record, "credit_partial_claim",
                          f"reverses {len(reversed_here & on_claim)} of {len(on_claim)} lines "
                          f"of claim {claim_id} sent to {name}; a void would cancel the "
                          "other lines too: needs a replacement claim")
                continue
            _queue_voids(store, [r.charge.charge_id for r in group], name)
            for record in group:
                record.destinations.remove(name)
                voided.add(record.charge.charge_id)
            log.info("correction.void_queued", destination=name, claim_id=claim_id,
                     count=len(group))
    for record in credits:
        if (record.status == QUEUED and not record.destinations
                and record.charge.charge_id not in voided):
            record.status = READY  # nothing left to send anywhere


def _hold(record: ChargeRecord, rule: str, message: str) -> None:
    record.status = HELD
    record.findings.append(Finding(rule=rule, severity="hold", field="transaction_type",
                                   message=message))


def _same_line(credit: Charge, other: Charge) -> bool:
    return (other.transaction_type == "charge" and bool(credit.patient.mrn)
            and other.patient.mrn == credit.patient.mrn
            and bool(credit.encounter.id) and other.encounter.id == credit.encounter.id
            and bool(credit.procedure.code)
            and (other.procedure.code or "").upper() == (credit.procedure.code or "").upper()
            and credit.service_date is not None and other.service_date == credit.service_date)


def _cancel_in_message(credit: ChargeRecord, records: list[ChargeRecord],
                       claim_destinations: set[str], taken: set[str]) -> bool:
    """A charge and its credit in the same message: neither is billed at claim destinations."""
    wanted = credit.charge.source.get(CORRECTS)
    for other in records:
        if other.status != QUEUED or other.charge.charge_id in taken:
            continue
        if not (other.charge.charge_id == wanted
                or (not wanted and _same_line(credit.charge, other.charge))):
            continue
        taken.add(other.charge.charge_id)
        credit.charge.source[CORRECTS] = other.charge.charge_id
        for record, message in ((other, f"reversed by credit {credit.charge.charge_id} "
                                        "in the same message"),
                                (credit, f"reverses charge {other.charge.charge_id} "
                                         "in the same message")):
            record.destinations = [d for d in record.destinations if d not in claim_destinations]
            record.findings.append(Finding(rule="credit_cancels_unsent", severity="warn",
                                           field="transaction_type",
                                           message=f"{message}: nothing billed"))
            if not record.destinations:
                record.status = READY
        return True
    return False


def _find_original(store: SqlStore, credit: Charge, taken: set[str]) -> str | None:
    """The oldest charge this credit reverses: same MRN, encounter, procedure code and date,
    not already reversed by another credit. Looks only at the patient's messages (indexed)."""
    mrn = credit.patient.mrn
    if not (mrn and credit.encounter.id and credit.procedure.code and credit.service_date):
        return None
    rows = store._query(
        "SELECT c.charge_id, c.status, c.transaction_type, c.data FROM charges c "
        "JOIN messages m ON m.id = c.message_id WHERE m.mrn = ? AND c.service_date = ? "
        "ORDER BY c.created_at, c.charge_id", (mrn, credit.service_date.isoformat()))
    candidates: list[tuple[int, str]] = []
    reversed_before: set[str] = set()
    for charge_id, status, transaction_type, data in rows:
        if charge_id == credit.charge_id:
            continue
        other = Charge.model_validate_json(data)
        if transaction_type == "credit":
            if other.source.get(CORRECTS):
                reversed_before.add(str(other.source[CORRECTS]))
            continue
        if status not in (SENT, QUEUED, FAILED) or not _same_line(credit, other):
            continue
        same_amount = (other.amount is not None and credit.amount is not None
                       and abs(other.amount) == abs(credit.amount))
        # Prefer a charge still owed (SENT/QUEUED) and the same amount; then the oldest.
        rank = (0 if status != FAILED else 2) + (0 if same_amount else 1)
        candidates.append((rank, charge_id))
    failed = [charge_id for rank, charge_id in candidates if rank >= 2]
    if failed:
        # Processed again after a crash: the charge this credit already cancelled is it.
        marks = ", ".join("?" for _ in failed)
        mine = store._query(f"SELECT charge_id FROM deliveries WHERE charge_id IN ({marks}) "
                            "AND detail = ?", (*failed, cancel_marker(credit.charge_id)))
        if mine:
            return str(mine[0][0])
    for _, charge_id in sorted(candidates, key=lambda c: c[0]):
        if charge_id not in reversed_before and charge_id not in taken:
            return charge_id
    return None


def _read(store: SqlStore, original_id: str, destination: str) -> _Original | None:
    rows = store._query("SELECT id, status, detail, result, batch_id, lease_until "
                        "FROM deliveries WHERE charge_id = ? AND destination = ? AND kind = ?",
                        (original_id, destination, "original"))
    if not rows:
        return None
    delivery_id, status, detail, result, batch_id, lease_until = rows[0]
    # In a batch (leased now, or assigned before a crash whose file may exist): not ours.
    in_flight = status == QUEUED and (batch_id is not None
                                      or (lease_until is not None and lease_until >= time.time()))
    return _Original(int(delivery_id), status, detail, json.loads(result or "{}"),
                     batch_id, in_flight)


def _settled(store: SqlStore, original_id: str, destination: str,
             wait_seconds: float) -> _Original | None:
    """The original's delivery, waiting a little while it is in a batch being written."""
    deadline = time.monotonic() + wait_seconds
    state = _read(store, original_id, destination)
    while state is not None and state.in_flight and time.monotonic() < deadline:
        time.sleep(0.1)
        state = _read(store, original_id, destination)
    return state


def _cancel(store: SqlStore, state: _Original, original_id: str, credit_id: str,
            destination: str, wait_seconds: float) -> _Original | None:
    """Cancel an unsent original unless a runner claimed it first (then wait for it)."""
    now = time.time()
    detail = cancel_marker(credit_id)
    with store.transaction() as cur:
        updated = store._exec(
            cur, "UPDATE deliveries SET status = ?, detail = ?, updated_at = ? WHERE id = ? "
            "AND status = ? AND batch_id IS NULL AND (lease_until IS NULL OR lease_until < ?)",
            (FAILED, detail, now, state.delivery_id, QUEUED, now)).rowcount
        if updated:
            store._event(cur, "delivery", state.delivery_id, FAILED, detail, now)
            store._roll_up_charge(cur, original_id, now)
    if updated:
        log.info("correction.original_cancelled", destination=destination,
                 delivery_id=state.delivery_id)
        return _read(store, original_id, destination)
    return _settled(store, original_id, destination, wait_seconds)


def _claim_charges(store: SqlStore, destination: str, batch_id: int | None,
                   claim_id: str) -> set[str]:
    """The charges billed on one claim: the SENT originals of its batch with its claim id."""
    if batch_id is None or not claim_id:
        return set()
    rows = store._query("SELECT charge_id, result FROM deliveries WHERE destination = ? "
                        "AND batch_id = ? AND kind = ? AND status = ?",
                        (destination, batch_id, "original", SENT))
    return {charge_id for charge_id, result in rows
            if json.loads(result or "{}").get("claim_id") == claim_id}


def _queue_voids(store: SqlStore, credit_ids: list[str], destination: str) -> None:
    """Queue kind-"void" deliveries; claimable once the credits are stored with the message
    (the runner joins charges), and harmless to repeat (unique per charge, kind)."""
    now = time.time()
    with store.transaction() as cur:
        for credit_id in credit_ids:
            store._queue_deliveries(cur, credit_id, [destination], "void", now)
