"""The two connector contracts — Source and Destination — and the explicit registry.

A connector is a `type:` name, a pydantic settings model and a class. The registry below
names every built-in connector; channels/ modules hold the implementations.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel

from engine.charge import Charge


@dataclass(frozen=True)
class IngestResult:
    """What the engine answers for one inbound message after journaling it.

    `reply` is the protocol answer (an HL7 ACK, or None when the sender asked for none);
    `status` is the stored message status (RECEIVED, ERROR, or DUPLICATE for a resend).
    """

    message_id: int | None
    status: str
    reply: bytes | None
    accepted: bool
    detail: str = ""


class Ingest(Protocol):
    """Journals one inbound HL7 message durably and returns the answer for its sender.

    The returned reply may be sent only after this returns: the message is on disk.
    """

    async def __call__(
        self, raw: bytes, *, channel: str, peer: str, transport: str,
        meta: dict[str, Any] | None = None,
    ) -> IngestResult: ...


class Source(ABC):
    """An inbound connector. It owns a listener; everything it receives goes to `ingest`.

    start() returns once the listener accepts connections; stop() stops accepting,
    lets in-flight messages finish journaling, then returns.
    """

    settings_model: ClassVar[type[BaseModel]]

    def __init__(self, name: str, settings: Any, ingest: Ingest) -> None:
        self.name = name
        self.settings = settings
        self.ingest = ingest

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...


@dataclass
class QueuedDelivery:
    """One charge waiting for one destination."""

    delivery_id: int
    charge_id: str
    charge: Charge
    attempts: int = 0
    # "original", or "void"/"replacement" for a correction of a charge already sent.
    kind: str = "original"
    # Result kept from an earlier delivery of the charge being corrected (e.g. claim id).
    previous: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeliveryOutcome:
    """The result for one delivery: SENT, RETRY (try again later) or FAILED (dead-letter).

    `response` is kept on the delivery for an operator (a PM API body, a validator
    message); `result` is structured data later corrections need (file, claim id).
    """

    delivery_id: int
    status: Literal["SENT", "RETRY", "FAILED"]
    detail: str = ""
    retry_after_seconds: float | None = None
    response: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


class DestinationContext(Protocol):
    """What the engine lends a destination: durable counters and where files go."""

    out_dir: Path

    def next_control_number(self, key: str) -> int:
        """Next value of a named counter, durable and never reused across restarts."""
        ...


class Destination(ABC):
    """An outbound connector.

    deliver_batch() gets up to `batch_size` QUEUED deliveries and a batch id, and returns
    one outcome per delivery; failures are outcomes, not exceptions. The batch id is
    recorded before the call: after a crash the same deliveries come back with the same
    batch id, so a destination can recognise a batch it already finished (a file already
    written) and answer SENT without doing it twice. The runner calls it only when
    `due(pending, oldest_age_seconds, flush)` says so (batching destinations wait).
    """

    settings_model: ClassVar[type[BaseModel]]

    def __init__(self, name: str, settings: Any, context: DestinationContext) -> None:
        self.name = name
        self.settings = settings
        self.context = context

    batch_size: int = 100

    def due(self, pending: int, oldest_age_seconds: float, flush: bool) -> bool:
        """Whether to deliver now; streaming destinations always are."""
        return pending > 0

    def accepts(self, charge: Charge) -> bool:
        """Per-destination routing filter (fan-out); default accepts every charge."""
        return True

    @abstractmethod
    def deliver_batch(self, deliveries: list[QueuedDelivery],
                      batch_id: int) -> list[DeliveryOutcome]: ...

    def close(self) -> None:  # noqa: B027 - optional hook, most destinations hold nothing
        """Release connections and files."""


# The explicit registry: config `type:` name -> "module:Class". Imported lazily so a
# deployment that never uses a connector never imports its dependencies.
SOURCE_TYPES: dict[str, str] = {
    "mllp": "channels.mllp:MllpSource",
    "http_hl7": "channels.http_hl7:HttpHl7Source",
    "file": "channels.file:FileSource",
    "fhir": "channels.fhir:FhirSource",
}
DESTINATION_TYPES: dict[str, str] = {
    "x12_837p": "channels.x12_837p:X12Destination",
    "pm_api": "channels.pm_api:PmApiDestination",
    "json_file": "channels.json_file:JsonFileDestination",
}


def load_connector(kind: Literal["source", "destination"], type_name: str) -> type[Any]:
    """The connector class registered under `type_name`; KeyError names the choices."""
    table = SOURCE_TYPES if kind == "source" else DESTINATION_TYPES
    if type_name not in table:
        raise KeyError(f"unknown {kind} type {type_name!r}; known: {', '.join(sorted(table))}")
    module_name, _, class_name = table[type_name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]


Handler = Callable[[bytes], Awaitable[bytes | None]]
