"""Tests for engine.x12.settings: defaults, strictness and the payer tables."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from engine.x12.settings import X12Settings


def put(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set a dotted path in a settings mapping and return the mapping."""
    *parents, last = path.split(".")
    target = data
    for name in parents:
        target = target[name]
    target[last] = value
    return data


class TestX12Settings:
    def test_defaults(self, settings_data: dict[str, Any]) -> None:
        """Usage T, the five grouping keys, 50 lines, 12 diagnoses and CI are the defaults."""
        s = X12Settings.model_validate(settings_data)
        assert s.usage_indicator == "T"
        assert s.claim_grouping == [
            "patient", "encounter", "rendering_provider", "payer", "billing_provider"]
        assert (s.max_lines_per_claim, s.max_diagnoses_per_claim) == (50, 12)
        assert s.claim_filing_indicator == "CI"
        assert s.billing_provider.tax_id == "371234567"
        assert s.billing_provider.address.postal_code == "627024310"
        assert s.submitter.contact_phone == "2175550142"

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            ("unknown_key", 1),
            ("submitter.fax", "5551234567"),
            ("usage_indicator", "X"),
            ("max_lines_per_claim", 51),
            ("max_diagnoses_per_claim", 13),
            ("claim_grouping", ["patient", "encounter"]),
            ("billing_provider.npi", "1234567890"),
            ("billing_provider.tax_id", "12345"),
            ("billing_provider.address.postal_code", "6270"),
            ("interchange.sender_id", "TOO*LONG*SENDER*ID"),
            ("claim_filing_indicators", {"Medicare": "XX"}),
        ],
    )
    def test_invalid_settings_are_rejected(
        self, settings_data: dict[str, Any], path: str, value: Any,
    ) -> None:
        """Unknown keys, bad codes, bad NPIs and missing structural keys fail validation."""
        with pytest.raises(ValidationError):
            X12Settings.model_validate(put(settings_data, path, value))

    def test_every_field_is_described(self) -> None:
        """Every settings field carries a description (connector docs are generated from it)."""
        schema = X12Settings.model_json_schema()
        missing = [
            f"{model}.{name}"
            for model, body in [("X12Settings", schema), *schema.get("$defs", {}).items()]
            for name, prop in body.get("properties", {}).items()
            if "description" not in prop
        ]
        assert missing == []

    def test_payer_table_and_filing_indicators(self, settings_data: dict[str, Any]) -> None:
        """Payer ids and SBR09 come from the tables by name or EHR id, case-insensitively."""
        data = put(settings_data, "payers", {"Aetna": "60054", "AET1": "60054"})
        s = X12Settings.model_validate(data)
        assert s.payer_id_for("  AETNA ", None) == "60054"
        assert s.payer_id_for("Aetna Better Health", "AET1") == "60054"
        assert s.payer_id_for("Cigna", "62308") == "62308"
        assert s.payer_id_for("Cigna", None) is None
        assert s.filing_indicator_for("MEDICARE", None) == "MB"
        assert s.filing_indicator_for("Medicaid", "77027") == "MC"
        assert s.filing_indicator_for("Humana Medicare Advantage", None) == "CI"
