"""The `x12_837p` destination: batches charges into ASC X12 837P 5010 claim files.

A batch becomes one interchange: claims grouped per settings, envelopes numbered from the
store's durable counters (never reused), validated with pyx12 before release, written
atomically (temp file, fsync, rename) beside a manifest of its charges and claims.
The file name carries the delivery batch id, so a batch re-delivered after a crash finds
its file already written and is not written twice. A file that fails validation is not
released: its charges go FAILED with the validator's message.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import Field

from engine.charge import Charge
from engine.connectors import DeliveryOutcome, Destination, QueuedDelivery
from engine.x12.claims import Correction, charge_problems, group_claims
from engine.x12.settings import X12Settings
from engine.x12.validate import validate_837
from engine.x12.writer import ControlNumbers, render_837p, transaction_count

log = structlog.get_logger("chargebridge.x12")


class X12DestinationSettings(X12Settings):
    directory: Path = Field(Path("837p"), description="Output directory, relative to out_dir.")
    file_pattern: str = Field("claims_{batch_id:08d}.837",
                              description="File name; {batch_id} and {date} are filled in.")
    batch_seconds: float = Field(5.0, ge=0, description="Write a file when the oldest queued "
                                 "charge has waited this long.")
    batch_max: int = Field(500, ge=1, description="Write a file once this many charges wait.")
    validate_files: bool = Field(True, description="Validate every file with pyx12 before "
                                 "releasing it.")
    filter: dict[str, Any] | None = Field(None, description="Routing filter (fan-out).")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class X12Destination(Destination):
    """Writes 837P files; one file per delivery batch."""

    settings_model = X12DestinationSettings
    settings: X12DestinationSettings

    def __init__(self, name: str, settings: Any, context: Any) -> None:
        super().__init__(name, settings, context)
        self.batch_size = settings.batch_max
        self.directory = Path(context.out_dir) / settings.directory
        self._accepts = _compile_filter(settings.filter)

    def due(self, pending: int, oldest_age_seconds: float, flush: bool) -> bool:
        if pending == 0:
            return False
        return (flush or pending >= self.settings.batch_max
                or oldest_age_seconds >= self.settings.batch_seconds)

    def accepts(self, charge: Charge) -> bool:
        return self._accepts(charge)

    def file_for(self, batch_id: int) -> Path:
        name = self.settings.file_pattern.format(batch_id=batch_id,
                                                 date=datetime.now().strftime("%Y%m%d"))
        return self.directory / name

    def deliver_batch(self, deliveries: list[QueuedDelivery],
                      batch_id: int) -> list[DeliveryOutcome]:
        path = self.file_for(batch_id)
        if path.exists():  # written before a crash: the batch is already out
            return [DeliveryOutcome(d.delivery_id, "SENT", f"in {path.name}",
                                    result={"file": path.name}) for d in deliveries]
        corrections: dict[str, Correction] = {}
        for d in deliveries:
            if d.kind in ("void", "replacement") or d.charge.transaction_type == "credit":
                corrections[d.charge_id] = ("7" if d.kind == "replacement" else "8",
                                            d.previous.get("payer_claim_number"))
        charges = [d.charge for d in deliveries]
        problems = charge_problems(charges, self.settings, corrections)
        outcomes = [DeliveryOutcome(d.delivery_id, "FAILED", str(problems[d.charge_id]))
                    for d in deliveries if d.charge_id in problems]
        good = [d for d in deliveries if d.charge_id not in problems]
        if not good:
            return outcomes
        claims = group_claims([d.charge for d in good], self.settings, corrections)
        control = ControlNumbers(
            interchange=self.context.next_control_number(f"{self.name}:isa") % 999_999_999,
            group=self.context.next_control_number(f"{self.name}:gs") % 999_999_999,
            transaction_start=1)
        text = render_837p(claims, self.settings, control)
        if self.settings.validate_files:
            verdict = validate_837(text)
            if not verdict.ok:
                reason = "pyx12 rejected the file: " + "; ".join(verdict.errors[:5])
                log.error("x12.invalid_file", destination=self.name, batch_id=batch_id,
                          count=len(good))
                return outcomes + [DeliveryOutcome(d.delivery_id, "FAILED", reason)
                                   for d in good]
        self.directory.mkdir(parents=True, exist_ok=True)
        claim_of = {cid: claim.claim_id for claim in claims for cid in claim.charge_ids}
        manifest = {"batch_id": batch_id, "file": path.name,
                    "interchange_control_number": control.interchange,
                    "transactions": transaction_count(claims),
                    "claims": [{"claim_id": c.claim_id, "charge_ids": c.charge_ids}
                               for c in claims]}
        _atomic_write(path.with_suffix(path.suffix + ".manifest.json"),
                      json.dumps(manifest, indent=2).encode())
        _atomic_write(path, text.encode("ascii", "replace"))
        log.info("x12.file_written", destination=self.name, batch_id=batch_id,
                 file=path.name, claims=len(claims), count=len(good))
        return outcomes + [DeliveryOutcome(d.delivery_id, "SENT", f"claim {claim_of[d.charge_id]}"
                                           f" in {path.name}",
                                           result={"file": path.name,
                                                   "claim_id": claim_of[d.charge_id]})
                           for d in good]


def _compile_filter(spec: dict[str, Any] | None) -> Any:
    if not spec:
        return lambda charge: True
    from channels.filters import compile_filter  # type: ignore[attr-defined,unused-ignore]

    return compile_filter(spec)
