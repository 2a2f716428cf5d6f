"""The `json_file` destination: one JSON-lines file per delivery batch, for PM systems
that import files.

Each line is the normalized charge JSON; a correction (void or replacement of a charge
already sent) carries one more key, `"correction": "void"|"replacement"`. A file appears
atomically (written to a temp name, fsynced, renamed, directory fsynced), so an importer
never sees half a file. The name comes from the batch id, and the batch id is recorded
before delivery: a batch re-delivered after a crash finds its file already there and is
answered SENT without writing it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from channels.batching import batch_due, check_file_pattern
from channels.filters import RoutingFilter
from engine.charge import Charge
from engine.connectors import DeliveryOutcome, Destination, DestinationContext, QueuedDelivery
from engine.files import atomic_write

__all__ = ["JsonFileDestination", "JsonFileSettings"]

log = structlog.get_logger("chargebridge.json_file")

# A name may only depend on what a re-delivery repeats exactly (never on the time).


class JsonFileSettings(BaseModel):
    """Settings of a `json_file` destination."""

    model_config = ConfigDict(extra="forbid")

    directory: Path = Field(Path("json"), description="Where files go; relative paths are "
                            "under the engine's out_dir.")
    file_pattern: str = Field(
        "{destination}-{batch_id:08d}.jsonl",
        description="File name; may use {batch_id} and {destination} (format specs allowed).")
    batch_seconds: float = Field(60.0, ge=0, description="Write a file once the oldest "
                                 "waiting charge is this old.")
    batch_max: int = Field(1000, ge=1, description="Write a file once this many charges wait; "
                           "also the most charges in one file.")
    fsync: bool = Field(True, description="fsync each file and its directory before it counts "
                        "as delivered.")
    filter: RoutingFilter = Field(default_factory=RoutingFilter,
                                  description="Which charges this destination takes.")

    @field_validator("file_pattern")
    @classmethod
    def _stable_name(cls, value: str) -> str:
        return check_file_pattern(value, {"batch_id": 1, "destination": "x"})


class JsonFileDestination(Destination):
    """Writes each batch of deliveries as one JSON-lines file."""

    settings_model: ClassVar[type[BaseModel]] = JsonFileSettings
    settings: JsonFileSettings

    def __init__(self, name: str, settings: JsonFileSettings,
                 context: DestinationContext) -> None:
        super().__init__(name, settings, context)
        self.batch_size = settings.batch_max
        self._accepts = settings.filter.compile()
        directory = settings.directory
        self.directory = directory if directory.is_absolute() else context.out_dir / directory

    def due(self, pending: int, oldest_age_seconds: float, flush: bool) -> bool:
        return batch_due(self.settings, pending, oldest_age_seconds, flush)

    def accepts(self, charge: Charge) -> bool:
        return self._accepts(charge)

    def file_for(self, batch_id: int) -> Path:
        return self.directory / self.settings.file_pattern.format(batch_id=batch_id,
                                                                  destination=self.name)

    def deliver_batch(self, deliveries: list[QueuedDelivery],
                      batch_id: int) -> list[DeliveryOutcome]:
        """All SENT once the file exists (written now or by an earlier try of the batch);
        all RETRY when it cannot be written."""
        ordered = sorted(deliveries, key=lambda d: d.delivery_id)
        path = self.file_for(batch_id)
        if path.exists():
            log.info("json_file.batch_exists", destination=self.name, batch_id=batch_id)
            detail = "file already written for this batch"
        else:
            try:
                self._write(path, ordered)
            except OSError as exc:
                log.error("json_file.write_failed", destination=self.name, batch_id=batch_id,
                          error=type(exc).__name__)
                return [DeliveryOutcome(d.delivery_id, "RETRY", f"{path}: {exc}")
                        for d in ordered]
            log.info("json_file.written", destination=self.name, batch_id=batch_id,
                     charges=len(ordered))
            detail = f"written to {path.name}"
        return [DeliveryOutcome(d.delivery_id, "SENT", detail,
                                result={"file": str(path), "line": line})
                for line, d in enumerate(ordered, start=1)]

    def _write(self, path: Path, deliveries: list[QueuedDelivery]) -> None:
        body = b"".join(json.dumps(_line(d), separators=(",", ":")).encode() + b"\n"
                        for d in deliveries)
        atomic_write(path, body, fsync=self.settings.fsync)


def _line(delivery: QueuedDelivery) -> dict[str, Any]:
    data = delivery.charge.to_json_dict()
    if delivery.kind != "original":
        data["correction"] = delivery.kind
    return data
