"""The processor hook for ADT messages: they carry no charges, they update the context.

A01/A03/A04/A08 (and A28/A31) merge their patient, visit and coverage into the ADT
context store; any other ADT event is acknowledged and processed without effect. Either
way the message ends PROCESSED without a mapping, its MRN recorded for search.
"""

from __future__ import annotations

from typing import Any

import structlog

from engine.context import extract_context, save_context
from engine.hl7.reader import Message
from engine.store.records import PROCESSED, MessageOutcome

__all__ = ["CONTEXT_EVENTS", "AdtContextHook"]

log = structlog.get_logger("chargebridge.context")

CONTEXT_EVENTS = frozenset({"A01", "A03", "A04", "A08", "A28", "A31"})


class AdtContextHook:
    """Message hook (stored, msg, plan) -> MessageOutcome | None: owns every ADT message."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __call__(self, stored: Any, msg: Any, plan: Any) -> MessageOutcome | None:
        if not isinstance(msg, Message):
            return None
        message_type = (msg.message_type or "").upper()
        if not message_type.startswith("ADT^"):
            return None
        event = (msg.trigger or "").upper()
        counts: dict[str, Any] = {"lines_in": 0}
        reason = None
        if event in CONTEXT_EVENTS:
            ctx = extract_context(msg)
            if ctx.mrn:
                counts["context"] = save_context(self.store, ctx, stored.id)
            else:
                reason = "no MRN in PID-3: ADT context not kept"
            log.info("context.updated", message_id=stored.id, kind=event,
                     status=",".join(counts.get("context", [])))
        else:
            counts["context"] = []
        return MessageOutcome(stored.id, PROCESSED, reason, mrn=msg.get("PID-3.1"),
                              control_id=stored.control_id, counts=counts)
