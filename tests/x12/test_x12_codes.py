"""Tests for engine.x12.codes: NPI check digits, code formats and element cleaning."""

from __future__ import annotations

import pytest

from engine.x12.codes import (
    clean_text,
    diagnosis_qualifiers,
    icd_code_for_hi,
    npi_is_valid,
    procedure_code_is_valid,
    relationship_code,
    x12_sex,
)


class TestCodes:
    def test_npi_check_digit(self) -> None:
        """CMS's example 1234567893 is valid; a wrong check digit or length is not."""
        assert npi_is_valid("1234567893")
        assert not npi_is_valid("1234567890")
        assert not npi_is_valid("123456789")
        assert not npi_is_valid("12345678a3")

    @pytest.mark.parametrize(
        ("code", "system", "expected"),
        [("E11.9", "ICD-10-CM", "E119"), ("t81.4xxa", None, "T814XXA"), ("U07.1", "I10", "U071"),
         ("250.00", "I9", "25000"), ("11.9", None, None), ("J45.909", "I9", None)],
    )
    def test_icd_code_for_hi(self, code: str, system: str | None, expected: str | None) -> None:
        """HI codes lose the dot and are checked against their code system's format."""
        assert icd_code_for_hi(code, system) == expected

    def test_qualifiers_follow_the_code_system(self) -> None:
        """ICD-10-CM uses ABK/ABF; ICD-9-CM uses BK/BF."""
        assert diagnosis_qualifiers("ICD-10-CM") == ("ABK", "ABF")
        assert diagnosis_qualifiers("I9CDX") == ("BK", "BF")

    @pytest.mark.parametrize(
        ("code", "ok"),
        [("99213", True), ("3072F", True), ("0042T", True), ("G0438", True),
         ("W1234", False), ("9921", False), ("CDM-100", False)],
    )
    def test_procedure_formats(self, code: str, ok: bool) -> None:
        """CPT and HCPCS Level II formats pass; chargemaster codes do not."""
        assert procedure_code_is_valid(code) is ok

    def test_relationships_and_sex(self) -> None:
        """HL7, FHIR and X12 relationship codes map to X12; sex maps to F, M or U."""
        assert [relationship_code(v) for v in ("SEL", "self", "18", "SPO", "CHD", "01")] == [
            "18", "18", "18", "01", "19", "01"]
        assert relationship_code("cousin-ish") is None and relationship_code(None) is None
        assert [x12_sex(v) for v in ("F", "male", "O", None)] == ["F", "M", "U", "U"]

    def test_clean_text_removes_delimiters(self) -> None:
        """Delimiters and control characters go, accents fold, length is capped."""
        assert clean_text("  José*Núñez:~^\tJr  ") == "JOSE NUNEZ JR"
        assert clean_text("ab_c", upper=False) == "ab_c"
        assert clean_text("x" * 70, max_len=60) == "X" * 60
