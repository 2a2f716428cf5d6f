"""What an ADT message says about a patient, a visit and its coverage, as charge fields.

Field names are the normalized charge's dotted paths (`patient.birth_date`), so enriching
a charge is copying values across. Positions are the ones HL7 v2.3 to v2.8 share: PID-3
(MRN, PID-2 for old senders), PID-5/7/8/11, PV1-2/3/19/44/45 and IN1-3/4/8/16/17/18/36/43/49.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from engine.hl7.reader import Message, Segment

__all__ = ["AdtContext", "coverage_of", "extract_context", "hl7_date"]


@dataclass
class AdtContext:
    """The context one ADT message carries; empty parts are left out, never cleared."""

    mrn: str | None
    visit: str | None
    message_time: str
    patient: dict[str, Any] = field(default_factory=dict)
    encounter: dict[str, Any] = field(default_factory=dict)
    coverage: list[dict[str, Any]] = field(default_factory=list)


def hl7_date(value: str | None) -> str | None:
    """An HL7 DT/TS value as YYYY-MM-DD; None when absent or not a real date."""
    if not value or len(value) < 8 or not value[:8].isdigit():
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8])).isoformat()
    except ValueError:
        return None


def _put(target: dict[str, Any], key: str, value: str | None) -> None:
    if value:
        target[key] = value


def _mrn(msg: Message) -> str | None:
    return msg.get("PID-3.1") or msg.get("PID-2.1")


def extract_context(msg: Message) -> AdtContext:
    """Patient (PID), visit (PV1) and coverage (IN1) context of an ADT message."""
    time_digits = "".join(c for c in (msg.msh.get(7) or "") if c.isdigit())[:14]
    ctx = AdtContext(_mrn(msg), msg.get("PV1-19.1"), time_digits)
    pid = msg.segment("PID")
    if pid is not None:
        p = ctx.patient
        _put(p, "patient.mrn", ctx.mrn)
        _put(p, "patient.last_name", pid.get(5, 1))
        _put(p, "patient.first_name", pid.get(5, 2))
        _put(p, "patient.middle_name", pid.get(5, 3))
        _put(p, "patient.birth_date", hl7_date(pid.get(7)))
        _put(p, "patient.sex", pid.get(8))
        for number, key in ((1, "line1"), (2, "line2"), (3, "city"), (4, "state"),
                            (5, "postal_code")):
            _put(p, f"patient.address.{key}", pid.get(11, number))
    pv1 = msg.segment("PV1")
    if pv1 is not None and ctx.visit:
        e = ctx.encounter
        _put(e, "encounter.id", ctx.visit)
        _put(e, "encounter.patient_class", pv1.get(2))
        _put(e, "encounter.location", pv1.get(3))
        _put(e, "encounter.admit_date", hl7_date(pv1.get(44)))
        _put(e, "encounter.discharge_date", hl7_date(pv1.get(45)))
    ctx.coverage = [c for c in (coverage_of(seg) for seg in msg.segments("IN1")) if c]
    return ctx


def coverage_of(in1: Segment) -> dict[str, Any]:
    """One IN1 as a normalized Coverage dict (empty when the IN1 names no payer or member)."""
    cov: dict[str, Any] = {}
    _put(cov, "payer_id", in1.get(3))
    _put(cov, "payer_name", in1.get(4) or in1.get(2, 2))
    _put(cov, "member_id", in1.get(36) or in1.get(49))
    _put(cov, "group_number", in1.get(8))
    _put(cov, "relationship", in1.get(17))
    if not cov.get("payer_id") and not cov.get("member_id"):
        return {}
    subscriber: dict[str, Any] = {}
    _put(subscriber, "last_name", in1.get(16, 1))
    _put(subscriber, "first_name", in1.get(16, 2))
    _put(subscriber, "birth_date", hl7_date(in1.get(18)))
    _put(subscriber, "sex", in1.get(43))
    cov["subscriber"] = subscriber
    return cov
