"""Message hooks the processor tries before mapping: each owns a kind of message that is
not a charge feed (ADT context updates, FHIR resources). A hook returns a MessageOutcome
when it handled the message, or None to let the mapping run."""

from __future__ import annotations

from typing import Any

from engine.store.base import SqlStore
from engine.store.records import PROCESSED, MessageOutcome


def adt_without_context(stored: Any, msg: Any, plan: Any) -> MessageOutcome | None:
    """ADT messages carry no charges: they are PROCESSED without a mapping."""
    if msg is not None and (msg.message_type or "").upper().startswith("ADT^"):
        return MessageOutcome(stored.id, PROCESSED, None, mrn=msg.get("PID-3.1"),
                              control_id=stored.control_id, counts={"lines_in": 0})
    return None


def default_hooks(config: Any, store: SqlStore) -> list[Any]:
    return [adt_without_context]
