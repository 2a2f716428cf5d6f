"""Plain records that cross the store interface (no database types leak out)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from engine.charge import Charge, Finding

# Message states (ARCHITECTURE.md): RECEIVED -> PROCESSED | FILTERED | ERROR.
RECEIVED, PROCESSED, FILTERED, ERROR = "RECEIVED", "PROCESSED", "FILTERED", "ERROR"
# Charge states: READY -> HELD | QUEUED -> SENT | FAILED.
READY, HELD, QUEUED, SENT, FAILED = "READY", "HELD", "QUEUED", "SENT", "FAILED"
# A FAILED delivery whose detail starts so was cancelled by a credit before it was sent:
# it must never be queued again (that would bill a charge its credit reversed).
CANCEL_PREFIX = "cancelled by credit "


@dataclass
class InboundRecord:
    """One message to journal, as received (raw bytes kept exactly)."""

    channel: str
    raw: bytes
    transport: str
    peer: str = ""
    sender: str = ""
    control_id: str | None = None
    message_type: str | None = None
    status: str = RECEIVED
    reason: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Seconds a resend of the same sender + control id counts as a duplicate; 0 = never.
    duplicate_window_seconds: float = 0.0

    @property
    def checks_duplicates(self) -> bool:
        """Whether a resend of this record within its window is answered as a duplicate:
        it names a control id, was readable, and its channel keeps a window."""
        return bool(self.control_id) and self.status != ERROR \
            and self.duplicate_window_seconds > 0

    def content_hash(self) -> str:
        """What makes a resend a duplicate besides sender + control id: the same bytes."""
        return hashlib.sha256(self.raw).hexdigest()[:32]


@dataclass(frozen=True)
class JournalOutcome:
    message_id: int
    duplicate: bool
    status: str


@dataclass
class StoredMessage:
    id: int
    channel: str
    raw: bytes
    transport: str
    status: str
    received_at: float
    control_id: str | None = None
    message_type: str | None = None
    sender: str = ""
    reason: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    mrn: str | None = None


@dataclass
class ChargeRecord:
    """A mapped charge ready to store: its status, findings and destinations."""

    charge: Charge
    status: str
    findings: list[Finding] = field(default_factory=list)
    destinations: list[str] = field(default_factory=list)
    duplicate_key: str | None = None


@dataclass
class MessageOutcome:
    """Everything processing one message decided, stored in one transaction."""

    message_id: int
    status: str
    reason: str | None = None
    charges: list[ChargeRecord] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    mrn: str | None = None
    message_type: str | None = None
    control_id: str | None = None


@dataclass
class DeliveryRow:
    id: int
    charge_id: str
    destination: str
    status: str
    attempts: int
    kind: str
    charge: Charge
    batch_id: int | None = None
    previous: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeliveryUpdate:
    delivery_id: int
    status: str
    detail: str = ""
    next_attempt_at: float | None = None
    response: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class Event:
    at: float
    entity: str
    entity_id: str
    status: str
    reason: str | None
