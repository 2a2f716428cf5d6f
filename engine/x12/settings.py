"""Settings for 837P claim content and envelopes: who submits, who receives, who bills.

These models hold only what goes *into* an 837P file. The x12_837p destination embeds
`X12Settings` in its own connector settings (output directory, batching, file names).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "STRUCTURAL_GROUPING_KEYS",
    "BillingProviderSettings",
    "GroupingKey",
    "InterchangeSettings",
    "ProviderAddressSettings",
    "ReceiverSettings",
    "SubmitterSettings",
    "X12Settings",
]

# SBR09 codes accepted by 005010X222A1 (pyx12 map 837.5010.X222.A1.xml, element 1032).
ClaimFilingIndicator = Literal[
    "11", "12", "13", "14", "15", "16", "17", "AM", "BL", "CH", "CI", "DS", "FI", "HM",
    "LM", "MA", "MB", "MC", "OF", "TV", "VA", "WC", "ZZ",
]
# ISA05/ISA07 qualifiers accepted by the 00501 control map.
InterchangeQualifier = Literal["01", "14", "20", "27", "28", "29", "30", "33", "ZZ"]

GroupingKey = Literal[
    "patient", "payer", "billing_provider", "rendering_provider",
    "encounter", "service_date", "place_of_service",
]
# An 837P claim carries exactly one patient/subscriber, payer, billing provider (2010AA)
# and claim-level rendering provider (2310B), so these keys cannot be left out.
STRUCTURAL_GROUPING_KEYS: tuple[GroupingKey, ...] = (
    "patient", "payer", "billing_provider", "rendering_provider",
)

DEFAULT_GROUPING: tuple[GroupingKey, ...] = (
    "patient", "encounter", "rendering_provider", "payer", "billing_provider",
)
DEFAULT_FILING_INDICATORS: dict[str, ClaimFilingIndicator] = {
    "medicare": "MB", "medicare part b": "MB", "medicaid": "MC",
    "tricare": "CH", "champva": "VA",
}

_NPI = re.compile(r"^[0-9]{10}$")
_TAX_ID = re.compile(r"^[0-9]{9}$")
_ISA_ID = re.compile(r"^[A-Za-z0-9 ]{1,15}$")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitterSettings(_Settings):
    """Loop 1000A: the organization that sends the file (NM1*41 and PER*IC)."""

    name: str = Field(description="Submitter organization name (NM1*41 NM103).", min_length=1)
    id: str = Field(
        description="Submitter id assigned by the receiver (NM1*41 NM109, 2-80 chars).",
        min_length=2, max_length=80,
    )
    contact_name: str = Field(description="EDI contact person (PER02).", min_length=1)
    contact_phone: str = Field(
        description="EDI contact telephone, digits only after cleaning (PER04, qualifier TE).",
        min_length=10,
    )

    @field_validator("contact_phone")
    @classmethod
    def _digits_only(cls, value: str) -> str:
        digits = re.sub(r"[^0-9]", "", value)
        if len(digits) < 10:
            raise ValueError("contact_phone needs at least 10 digits")
        return digits


class ReceiverSettings(_Settings):
    """Loop 1000B: the clearinghouse or payer that receives the file (NM1*40)."""

    name: str = Field(description="Receiver organization name (NM1*40 NM103).", min_length=1)
    id: str = Field(
        description="Receiver primary id (NM1*40 NM109, 2-80 chars).",
        min_length=2, max_length=80,
    )


class ProviderAddressSettings(_Settings):
    """A street address for the billing provider (2010AA N3/N4; no PO box per the TR3)."""

    line1: str = Field(description="Street address line (N301).", min_length=1)
    line2: str | None = Field(default=None, description="Second address line (N302).")
    city: str = Field(description="City (N401).", min_length=2)
    state: str = Field(
        description="Two-letter US state or province code (N402).", pattern=r"^[A-Z]{2}$",
    )
    postal_code: str = Field(
        description="ZIP code, 5 or 9 digits; dashes are removed (N403). The TR3 asks for 9.",
    )

    @field_validator("postal_code")
    @classmethod
    def _zip(cls, value: str) -> str:
        digits = value.replace("-", "").replace(" ", "")
        if not re.fullmatch(r"[0-9]{5}([0-9]{4})?", digits):
            raise ValueError("postal_code must be a 5- or 9-digit ZIP code")
        return digits


class BillingProviderSettings(_Settings):
    """Loop 2010AA: the billing provider used for charges that do not name one."""

    npi: str = Field(description="Billing provider NPI, 10 digits (NM1*85 NM109, XX).")
    name: str = Field(description="Billing organization name (NM1*85 NM103).", min_length=1)
    tax_id: str = Field(
        description="Employer identification number, 9 digits; dashes removed (REF*EI).",
    )
    taxonomy: str | None = Field(
        default=None,
        description="Provider taxonomy code (PRV*BI*PXC), 10 characters, e.g. 207Q00000X.",
        pattern=r"^[0-9A-Z]{9}X$",
    )
    address: ProviderAddressSettings = Field(description="Billing provider street address.")

    @field_validator("npi")
    @classmethod
    def _npi(cls, value: str) -> str:
        from engine.x12.codes import npi_is_valid

        if not _NPI.match(value) or not npi_is_valid(value):
            raise ValueError("npi must be 10 digits with a valid check digit")
        return value

    @field_validator("tax_id")
    @classmethod
    def _tax_id(cls, value: str) -> str:
        digits = value.replace("-", "")
        if not _TAX_ID.match(digits):
            raise ValueError("tax_id must be 9 digits (EIN)")
        return digits


class InterchangeSettings(_Settings):
    """ISA/GS envelope identities."""

    sender_qualifier: InterchangeQualifier = Field(
        default="ZZ", description="ISA05 interchange id qualifier of the sender.",
    )
    sender_id: str = Field(
        description="ISA06 interchange sender id (1-15 letters, digits or spaces).",
    )
    receiver_qualifier: InterchangeQualifier = Field(
        default="ZZ", description="ISA07 interchange id qualifier of the receiver.",
    )
    receiver_id: str = Field(
        description="ISA08 interchange receiver id (1-15 letters, digits or spaces).",
    )
    application_sender_code: str | None = Field(
        default=None, description="GS02; defaults to the interchange sender id.",
        min_length=2, max_length=15,
    )
    application_receiver_code: str | None = Field(
        default=None, description="GS03; defaults to the interchange receiver id.",
        min_length=2, max_length=15,
    )
    acknowledgment_requested: bool = Field(
        default=False, description="ISA14: ask the receiver for a TA1 acknowledgment.",
    )

    @field_validator("sender_id", "receiver_id")
    @classmethod
    def _isa_id(cls, value: str) -> str:
        value = value.strip()
        if not _ISA_ID.match(value):
            raise ValueError("interchange ids are 1-15 letters, digits or spaces")
        return value


class X12Settings(_Settings):
    """Everything an 837P 005010X222A1 file needs beyond the charges themselves."""

    submitter: SubmitterSettings = Field(description="Loop 1000A submitter.")
    receiver: ReceiverSettings = Field(description="Loop 1000B receiver.")
    billing_provider: BillingProviderSettings = Field(
        description="Default 2010AA billing provider for charges lacking one; also supplies "
        "the address and tax id when a charge names only the billing NPI.",
    )
    interchange: InterchangeSettings = Field(description="ISA/GS sender and receiver ids.")
    usage_indicator: Literal["T", "P"] = Field(
        default="T", description="ISA15: T for test files, P for production.",
    )
    claim_grouping: list[GroupingKey] = Field(
        default_factory=lambda: list(DEFAULT_GROUPING),
        description="Charges sharing these values become one claim. patient, payer, "
        "billing_provider and rendering_provider must be listed (an 837P claim has one of "
        "each); encounter, service_date and place_of_service are optional. Charge and "
        "correction frequency always separate claims.",
    )
    max_lines_per_claim: int = Field(
        default=50, ge=1, le=50, description="Service lines per claim (the TR3 allows 50).",
    )
    max_diagnoses_per_claim: int = Field(
        default=12, ge=4, le=12,
        description="Diagnoses per claim HI segment (the TR3 allows 12; a line points to 4).",
    )
    payers: dict[str, str] = Field(
        default_factory=dict,
        description="Payer table: payer name (or the EHR's payer id) -> payer id sent in "
        "2010BB NM109. Matched case-insensitively; wins over the EHR's payer id.",
    )
    claim_filing_indicator: ClaimFilingIndicator = Field(
        default="CI", description="SBR09 for payers not in claim_filing_indicators "
        "(CI = commercial insurance).",
    )
    claim_filing_indicators: dict[str, ClaimFilingIndicator] = Field(
        default_factory=lambda: dict(DEFAULT_FILING_INDICATORS),
        description="Payer name or payer id -> SBR09 claim filing indicator, matched "
        "case-insensitively on the whole name (e.g. Medicare -> MB, Medicaid -> MC).",
    )

    @model_validator(mode="after")
    def _structural_keys(self) -> X12Settings:
        missing = [k for k in STRUCTURAL_GROUPING_KEYS if k not in self.claim_grouping]
        if missing:
            raise ValueError(
                f"claim_grouping must include {', '.join(missing)}: an 837P claim has exactly "
                "one patient, payer, billing provider and rendering provider"
            )
        return self

    def payer_id_for(self, payer_name: str | None, ehr_payer_id: str | None) -> str | None:
        """The 2010BB payer id: the payer table by name or EHR id, else the EHR's own id."""
        table = {_fold(k): v for k, v in self.payers.items()}
        for key in (payer_name, ehr_payer_id):
            if key and _fold(key) in table:
                return table[_fold(key)]
        return ehr_payer_id or None

    def filing_indicator_for(self, payer_name: str | None, payer_id: str | None) -> str:
        """SBR09 for a payer: the table by name or id, else the default indicator."""
        table = {_fold(k): v for k, v in self.claim_filing_indicators.items()}
        for key in (payer_name, payer_id):
            if key and _fold(key) in table:
                return table[_fold(key)]
        return self.claim_filing_indicator


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()
