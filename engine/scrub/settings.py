"""Scrubber settings: the `scrub:` section of config.yaml, overridable per payer.

    scrub:
      duplicate_window_days: 30
      rules:
        modifiers: {severity: warn}
      telehealth_payers: ["00621"]
      prior_auth:
        - {codes: ["71046"], payers: ["60054"]}
      payers:
        "00952": {rules: {telehealth_modifier: {enabled: false}}}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.scrub.codes import DEFAULT_MODIFIERS, PLACE_OF_SERVICE

__all__ = ["RULE_IDS", "PayerSettings", "PriorAuthRule", "RuleSetting", "ScrubSettings"]

# Every rule the scrubber knows; findings carry them as `scrub.<id>`.
RULE_IDS = (
    "required_fields",
    "npi_check_digit",
    "icd10_format",
    "procedure_code_format",
    "place_of_service",
    "modifiers",
    "telehealth_modifier",
    "service_date",
    "units_amount",
    "diagnosis_pointers",
    "diagnoses_per_claim",
    "duplicate",
    "prior_authorization",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _known_rules(rules: dict[str, RuleSetting]) -> dict[str, RuleSetting]:
    import difflib

    for rule_id in rules:
        if rule_id not in RULE_IDS:
            close = difflib.get_close_matches(rule_id, RULE_IDS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(RULE_IDS)}"
            raise ValueError(f"unknown scrub rule {rule_id!r} ({hint})")
    return rules


class RuleSetting(_Strict):
    """Turn one rule off, or change what its findings do (hold the charge, or only warn)."""

    enabled: bool = Field(True, description="False switches the rule off.")
    severity: Literal["hold", "warn"] | None = Field(
        None, description="hold stops the charge until a person releases it; warn lets it pass.")


class PriorAuthRule(_Strict):
    """Codes that need a prior authorization number for the listed payers ("*" = any)."""

    codes: list[str] = Field(description="CPT/HCPCS codes needing authorization.")
    payers: list[str] = Field(default_factory=lambda: ["*"],
                              description="Payer ids (coverage payer_id), or '*' for every payer.")


class PayerSettings(_Strict):
    """Overrides for charges whose primary coverage is this payer."""

    rules: dict[str, RuleSetting] = Field(default_factory=dict)
    allowed_modifiers: list[str] | None = Field(
        None, description="This payer's modifier list (replaces the global one).")
    telehealth_modifier_required: bool | None = Field(
        None, description="True: POS 02/10 lines need modifier 95 or GT for this payer.")

    @field_validator("rules")
    @classmethod
    def _check_rules(cls, value: dict[str, RuleSetting]) -> dict[str, RuleSetting]:
        return _known_rules(value)


class ScrubSettings(_Strict):
    """The rule set: which rules run, how severe they are, and the lists they check against."""

    rules: dict[str, RuleSetting] = Field(
        default_factory=dict, description="Per rule id: enabled and severity.")
    allowed_modifiers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MODIFIERS),
        description="Modifiers accepted on a line (an empty list accepts any).")
    place_of_service_codes: list[str] = Field(
        default_factory=lambda: sorted(PLACE_OF_SERVICE),
        description="Valid place-of-service codes (default: the CMS code set).")
    telehealth_payers: list[str] = Field(
        default_factory=list,
        description="Payer ids whose telehealth lines (POS 02/10) need a telehealth modifier; "
                    "'*' for every payer.")
    telehealth_modifiers: list[str] = Field(
        default_factory=lambda: ["95", "GT"],
        description="Modifiers that mark a telehealth service.")
    prior_auth: list[PriorAuthRule] = Field(default_factory=list)
    duplicate_window_days: int = Field(
        30, ge=0, description="A charge with the same patient, date, code and modifiers "
                              "within this many days is held as a duplicate.")
    max_diagnoses_per_claim: int = Field(12, ge=1, le=12, description="837P HI allows 12.")
    payers: dict[str, PayerSettings] = Field(
        default_factory=dict, description="Overrides keyed by payer id.")

    @field_validator("rules")
    @classmethod
    def _check_rules(cls, value: dict[str, RuleSetting]) -> dict[str, RuleSetting]:
        return _known_rules(value)

    @model_validator(mode="after")
    def _upper_codes(self) -> ScrubSettings:
        self.allowed_modifiers = [m.strip().upper() for m in self.allowed_modifiers]
        self.telehealth_modifiers = [m.strip().upper() for m in self.telehealth_modifiers]
        return self
