"""The normalized charge: what every mapping produces and every destination consumes.

JSON field names are a public contract — extend, never rename. Decimals serialize as
strings, dates as YYYY-MM-DD, absent values as null.
"""

from __future__ import annotations

import hashlib
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class Address(_Model):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None


class Patient(_Model):
    mrn: str | None = None
    last_name: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    birth_date: date | None = None
    sex: str | None = None
    address: Address = Field(default_factory=Address)


class Encounter(_Model):
    id: str | None = None
    patient_class: str | None = None
    location: str | None = None
    admit_date: date | None = None
    discharge_date: date | None = None


class Subscriber(_Model):
    last_name: str | None = None
    first_name: str | None = None
    birth_date: date | None = None
    sex: str | None = None


class Coverage(_Model):
    payer_id: str | None = None
    payer_name: str | None = None
    member_id: str | None = None
    group_number: str | None = None
    relationship: str | None = None
    subscriber: Subscriber = Field(default_factory=Subscriber)


class Procedure(_Model):
    code: str | None = None
    system: str | None = None
    description: str | None = None
    modifiers: list[str] = Field(default_factory=list)


class Diagnosis(_Model):
    code: str
    system: str = "ICD-10-CM"


class Provider(_Model):
    npi: str | None = None
    last_name: str | None = None
    first_name: str | None = None


class BillingProvider(_Model):
    npi: str | None = None
    name: str | None = None
    tax_id: str | None = None
    address: Address = Field(default_factory=Address)


class Finding(_Model):
    """A scrub or mapping finding: `severity` hold stops the charge, warn lets it pass."""

    rule: str
    severity: Literal["hold", "warn"]
    field: str | None = None
    message: str


class Charge(_Model):
    """One billable (or credited) service, normalized from an HL7 or FHIR source."""

    charge_id: str
    transaction_type: Literal["charge", "credit"] = "charge"
    patient: Patient = Field(default_factory=Patient)
    encounter: Encounter = Field(default_factory=Encounter)
    coverage: list[Coverage] = Field(default_factory=list)
    service_date: date | None = None
    service_date_end: date | None = None
    procedure: Procedure = Field(default_factory=Procedure)
    units: Decimal | None = None
    amount: Decimal | None = None
    diagnoses: list[Diagnosis] = Field(default_factory=list)
    diagnosis_pointers: list[int] = Field(default_factory=list)
    rendering_provider: Provider = Field(default_factory=Provider)
    billing_provider: BillingProvider = Field(default_factory=BillingProvider)
    place_of_service: str | None = None
    prior_authorization: str | None = None
    # Provenance: which source line and which mapping produced this charge.
    source: dict[str, Any] = Field(default_factory=dict)

    @field_serializer("units", "amount")
    def _decimal_as_string(self, value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    def to_json_dict(self) -> dict[str, Any]:
        """The charge as the JSON contract shapes it (decimals as strings, ISO dates)."""
        return self.model_dump(mode="json")


def make_charge_id(channel: str, control_id: str, line_id: str) -> str:
    """A deterministic charge id: the same message line always yields the same id.

    Reprocessing a message or a retried delivery therefore never mints a second charge.
    """
    digest = hashlib.sha256(f"{channel}\x1f{control_id}\x1f{line_id}".encode()).hexdigest()
    return f"ch_{digest[:24]}"
