"""The `x12_837p` destination: batches charges into ASC X12 837P 5010 claim files.

A batch becomes one interchange: claims grouped per settings, envelopes numbered from the
store's durable counters (never reused), validated with pyx12 before release, written
atomically (temp file, fsync, rename) beside a manifest of its charges and claims.
The file name carries the delivery batch id, so a batch re-delivered after a crash finds
its file already written and is not written twice. A file that fails validation is not
released: its charges go FAILED with the validator's message.

Corrections (engine.pipeline.corrections decides them): a delivery of kind "void" (or a
credit) becomes a frequency-8 claim, "replacement" a frequency-7 one, with REF*F8 set to
the payer's claim number when the original delivery's result records one, else to the
original claim's CLM01 (our claim id) so the receiver can still match it. A correction
whose original claim is unknown goes FAILED: there is nothing to refer to.
"""

from __future__ import annotations

import glob
import json
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import structlog
from pydantic import Field, field_validator

from channels.batching import batch_due, check_file_pattern
from channels.filters import RoutingFilter
from engine.charge import Charge
from engine.connectors import DeliveryOutcome, Destination, QueuedDelivery
from engine.files import atomic_write
from engine.x12.claims import Claim, Correction, charge_problems, group_claims
from engine.x12.errors import ClaimDataError, X12Error, X12ValidatorUnavailable
from engine.x12.settings import X12Settings
from engine.x12.validate import validate_837
from engine.x12.writer import ControlNumbers, render_837p, transaction_count

log = structlog.get_logger("chargebridge.x12")


class X12DestinationSettings(X12Settings):
    directory: Path = Field(Path("837p"), description="Output directory, relative to out_dir.")
    file_pattern: str = Field("claims_{batch_id:08d}.837",
                              description="File name; {batch_id} (required: it makes a "
                              "re-delivered batch find its file), {date} (YYYYMMDD) and "
                              "{usage} (T or P) are filled in.")
    batch_seconds: float = Field(5.0, ge=0, description="Write a file when the oldest queued "
                                 "charge has waited this long (`chargebridge flush` writes "
                                 "at once).")
    batch_max: int = Field(500, ge=1, description="Write a file once this many charges wait; "
                           "also the most charges one file holds.")
    validate_files: bool = Field(True, description="Validate every file with pyx12 before "
                                 "releasing it.")
    filter: RoutingFilter = Field(default_factory=RoutingFilter,
                                  description="Which charges this destination takes.")


    @field_validator("file_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        return check_file_pattern(value, {"batch_id": 1, "date": "20240101", "usage": "T"})


class X12Destination(Destination):
    """Writes 837P files; one file per delivery batch."""

    settings_model = X12DestinationSettings
    settings: X12DestinationSettings
    # Credits routed here become void claims (engine.pipeline.corrections).
    voids_claims: ClassVar[bool] = True

    def __init__(self, name: str, settings: Any, context: Any) -> None:
        super().__init__(name, settings, context)
        self.batch_size = settings.batch_max
        self.directory = Path(context.out_dir) / settings.directory
        self._accepts = settings.filter.compile()

    def due(self, pending: int, oldest_age_seconds: float, flush: bool) -> bool:
        return batch_due(self.settings, pending, oldest_age_seconds, flush)

    def accepts(self, charge: Charge) -> bool:
        return self._accepts(charge)

    def file_for(self, batch_id: int) -> Path:
        """Where batch `batch_id` is written (today's date for {date})."""
        return self.directory / self._name(batch_id, datetime.now().strftime("%Y%m%d"))

    def existing_file(self, batch_id: int) -> Path | None:
        """The file batch `batch_id` was already written to, whatever day that was."""
        if "{date" not in self.settings.file_pattern:  # one possible name: no listing
            path = self.directory / self._name(batch_id, "")
            return path if path.exists() else None
        marker = "\x00date\x00"
        pattern = glob.escape(self._name(batch_id, marker)).replace(marker, "[0-9]" * 8)
        found = sorted(self.directory.glob(pattern))
        return found[0] if found else None

    def _name(self, batch_id: int, date: str) -> str:
        return self.settings.file_pattern.format(batch_id=batch_id, date=date,
                                                 usage=self.settings.usage_indicator)

    def deliver_batch(self, deliveries: list[QueuedDelivery],
                      batch_id: int) -> list[DeliveryOutcome]:
        done = self.existing_file(batch_id)
        if done is not None:  # written before a crash: the batch is already out
            return self._already_written(deliveries, done)
        corrections, outcomes = self._corrections(deliveries)
        pending = [d for d in deliveries if d.delivery_id not in {o.delivery_id
                                                                   for o in outcomes}]
        problems = charge_problems([d.charge for d in pending], self.settings, corrections)
        outcomes += [DeliveryOutcome(d.delivery_id, "FAILED", str(problems[d.charge_id]))
                     for d in pending if d.charge_id in problems]
        good = [d for d in pending if d.charge_id not in problems]
        while good:
            try:
                return outcomes + self._write(good, corrections, batch_id)
            except ClaimDataError as exc:
                # The writer found what the charge checks could not (e.g. a value empty
                # once cleaned): set that charge aside and write the others.
                outcomes += [DeliveryOutcome(d.delivery_id, "FAILED", str(exc))
                             for d in good if d.charge_id == exc.charge_id]
                remaining = [d for d in good if d.charge_id != exc.charge_id]
                if len(remaining) == len(good):
                    return outcomes + [DeliveryOutcome(d.delivery_id, "FAILED", str(exc))
                                       for d in good]
                good = remaining
            except X12ValidatorUnavailable:
                raise  # an installation problem, not the charges': the runner retries
            except X12Error as exc:
                return outcomes + [DeliveryOutcome(d.delivery_id, "FAILED", str(exc))
                                   for d in good]
        return outcomes

    def _corrections(self, deliveries: list[QueuedDelivery]
                     ) -> tuple[dict[str, Correction], list[DeliveryOutcome]]:
        """Frequency and REF*F8 reference of each correction; FAILED when it has none."""
        corrections: dict[str, Correction] = {}
        failed: list[DeliveryOutcome] = []
        for d in deliveries:
            if d.kind not in ("void", "replacement") and d.charge.transaction_type != "credit":
                continue
            reference = (d.previous.get("payer_claim_number") or d.previous.get("claim_id")
                         or None)
            if reference is None:
                failed.append(DeliveryOutcome(
                    d.delivery_id, "FAILED",
                    f"charge {d.charge_id}: a {d.kind if d.kind != 'original' else 'credit'} "
                    f"corrects a claim sent to {self.name}, and no claim sent here is known "
                    "for it (REF*F8 would be empty)"))
                continue
            corrections[d.charge_id] = ("7" if d.kind == "replacement" else "8", str(reference))
        return corrections, failed

    def _write(self, good: list[QueuedDelivery], corrections: dict[str, Correction],
               batch_id: int) -> list[DeliveryOutcome]:
        claims = group_claims([d.charge for d in good], self.settings, corrections)
        control = ControlNumbers(interchange=self._control(f"{self.name}:isa"),
                                 group=self._control(f"{self.name}:gs"), transaction_start=1)
        text = render_837p(claims, self.settings, control)
        if self.settings.validate_files:
            verdict = validate_837(text)
            if not verdict.ok:
                reason = "pyx12 rejected the file: " + "; ".join(verdict.errors[:5])
                log.error("x12.invalid_file", destination=self.name, batch_id=batch_id,
                          count=len(good))
                return [DeliveryOutcome(d.delivery_id, "FAILED", reason, response=reason)
                        for d in good]
        path = self.file_for(batch_id)
        self.directory.mkdir(parents=True, exist_ok=True)
        claim_of = {cid: claim for claim in claims for cid in claim.charge_ids}
        atomic_write(path.with_suffix(path.suffix + ".manifest.json"),
                      json.dumps(_manifest(batch_id, path, control, claims, good),
                                 indent=2).encode())
        atomic_write(path, text.encode("ascii", "replace"))
        log.info("x12.file_written", destination=self.name, batch_id=batch_id,
                 file=path.name, claims=len(claims), count=len(good))
        outcomes = []
        for d in good:
            claim = claim_of[d.charge_id]
            result: dict[str, Any] = {"file": path.name, "claim_id": claim.claim_id,
                                      "frequency": claim.frequency}
            if claim.payer_claim_number:
                result["corrects_claim"] = claim.payer_claim_number
            outcomes.append(DeliveryOutcome(d.delivery_id, "SENT",
                                            f"claim {claim.claim_id} in {path.name}",
                                            result=result))
        return outcomes

    def _already_written(self, deliveries: list[QueuedDelivery],
                         path: Path) -> list[DeliveryOutcome]:
        """Outcomes of a batch whose file exists, from its manifest (claim ids kept)."""
        claim_of: dict[str, dict[str, Any]] = {}
        manifest = path.with_suffix(path.suffix + ".manifest.json")
        if manifest.exists():
            for claim in json.loads(manifest.read_text()).get("claims", []):
                for charge_id in claim.get("charge_ids", []):
                    claim_of[charge_id] = claim
        outcomes = []
        for d in deliveries:
            claim = claim_of.get(d.charge_id)
            if claim is None:  # not in the file: it failed the checks when it was written
                outcomes.append(DeliveryOutcome(d.delivery_id, "FAILED",
                                                f"not in {path.name}, written before a "
                                                "restart; see the earlier attempt"))
                continue
            result: dict[str, Any] = {"file": path.name, "claim_id": claim["claim_id"],
                                      "frequency": claim.get("frequency", "1")}
            if claim.get("corrects_claim"):
                result["corrects_claim"] = claim["corrects_claim"]
            outcomes.append(DeliveryOutcome(d.delivery_id, "SENT",
                                            f"claim {claim['claim_id']} in {path.name}",
                                            result=result))
        return outcomes

    def _control(self, key: str) -> int:
        """Next ISA13/GS06 number: 1..999999999, from a durable counter never reused."""
        return (self.context.next_control_number(key) - 1) % 999_999_999 + 1


def _manifest(batch_id: int, path: Path, control: ControlNumbers, claims: list[Claim],
              good: list[QueuedDelivery]) -> dict[str, Any]:
    """What a file holds, for people and for re-delivery after a crash (no PHI)."""
    return {
        "batch_id": batch_id, "file": path.name,
        "interchange_control_number": control.interchange,
        "group_control_number": control.group,
        "transactions": transaction_count(claims),
        "charges": [{"charge_id": d.charge_id, "delivery_id": d.delivery_id, "kind": d.kind}
                    for d in good],
        "claims": [{"claim_id": c.claim_id, "frequency": c.frequency,
                    "corrects_claim": c.payer_claim_number, "charge_ids": c.charge_ids,
                    "total": str(c.total)} for c in claims],
    }
