"""The scrubber: every rule fires on a bad charge and stays quiet on a good one; settings
and per-payer overrides change what runs and how severe it is."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from engine.charge import Charge, Finding
from engine.scrub import Scrubber, ScrubSettings, duplicate_key
from engine.scrub.codes import npi_is_valid

TODAY = date(2024, 6, 1)


def good(**changes: Any) -> Charge:
    """A clean office-visit charge; `changes` are dotted-field overrides."""
    data: dict[str, Any] = {
        "charge_id": "ch_1",
        "patient": {"mrn": "MRN1", "last_name": "Rivera", "first_name": "Elena",
                    "birth_date": "1978-04-12", "sex": "F",
                    "address": {"line1": "418 Juniper", "city": "Springfield", "state": "IL",
                                "postal_code": "62704"}},
        "encounter": {"id": "V1", "admit_date": "2024-03-15", "discharge_date": "2024-03-15"},
        "coverage": [{"payer_id": "00621", "payer_name": "BCBS IL", "member_id": "XOH1",
                      "relationship": "18"}],
        "service_date": "2024-03-15",
        "procedure": {"code": "99213", "modifiers": ["25"]},
        "units": "1", "amount": "145.00",
        "diagnoses": [{"code": "E11.9"}, {"code": "I10"}],
        "diagnosis_pointers": [1, 2],
        "rendering_provider": {"npi": "1234567893"},
        "place_of_service": "11",
    }
    for dotted, value in changes.items():
        holder = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            holder = holder.setdefault(part, {})
        holder[leaf] = value
    return Charge.model_validate(data)


def scrub(charge: Charge, settings: dict[str, Any] | None = None, **kwargs: Any
          ) -> list[Finding]:
    scrubber = Scrubber(ScrubSettings.model_validate(settings or {}), today=lambda: TODAY)
    return scrubber.scrub([charge], **kwargs)[charge.charge_id]


def rules(findings: list[Finding]) -> set[tuple[str, str | None]]:
    return {(f.rule, f.field) for f in findings}


def test_a_clean_charge_has_no_findings() -> None:
    """The reference charge passes every rule."""
    assert scrub(good(), {"telehealth_payers": ["*"],
                          "prior_auth": [{"codes": ["71046"]}]},
                 is_duplicate=lambda key: False) == []


class TestRequiredFields:
    @pytest.mark.parametrize("field", ["patient.last_name", "patient.birth_date", "service_date",
                                       "procedure.code", "units", "amount",
                                       "place_of_service", "patient.address.postal_code"])
    def test_missing_field_fires(self, field: str) -> None:
        """A field an 837P line requires is held when missing."""
        found = scrub(good(**{field: None}))
        assert ("scrub.required_fields", field) in rules(found)
        assert all(f.severity == "hold" for f in found)

    def test_missing_coverage_and_diagnoses(self) -> None:
        """No coverage and no diagnosis are both reported."""
        found = rules(scrub(good(coverage=[], diagnoses=[], diagnosis_pointers=[])))
        assert {("scrub.required_fields", "coverage"),
                ("scrub.required_fields", "diagnoses")} <= found

    def test_subscriber_needed_when_patient_is_not_the_subscriber(self) -> None:
        """A spouse's coverage needs the subscriber's name; self coverage does not."""
        spouse = good(coverage=[{"payer_id": "1", "payer_name": "P", "member_id": "M",
                                 "relationship": "01"}])
        assert ("scrub.required_fields", "coverage[0].subscriber.last_name") in rules(
            scrub(spouse))
        assert scrub(good()) == []


class TestCodeFormats:
    def test_npi_check_digit(self) -> None:
        """The NPI check digit uses Luhn with the 80840 prefix (CMS test vector)."""
        assert npi_is_valid("1234567893") and not npi_is_valid("1234567890")
        assert not npi_is_valid("123456789")
        found = scrub(good(**{"rendering_provider.npi": "1234567890",
                              "billing_provider.npi": "1245319599"}))
        assert rules(found) == {("scrub.npi_check_digit", "rendering_provider.npi")}

    @pytest.mark.parametrize("code", ["E11.9", "I10", "T81.4XXA", "E119", "U07.1"])
    def test_icd10_valid(self, code: str) -> None:
        """ICD-10-CM codes pass with or without the decimal point."""
        assert scrub(good(diagnoses=[{"code": code}], diagnosis_pointers=[1])) == []

    @pytest.mark.parametrize("code", ["440.0", "E1", "E11.99999", "e11.9", "11.9"])
    def test_icd10_invalid(self, code: str) -> None:
        """ICD-9 codes and malformed codes are held."""
        found = scrub(good(diagnoses=[{"code": code}], diagnosis_pointers=[1]))
        assert rules(found) == {("scrub.icd10_format", "diagnoses[0].code")}

    def test_icd9_system_is_held(self) -> None:
        """A diagnosis coded in ICD-9-CM is held even if its text looks like ICD-10."""
        found = scrub(good(diagnoses=[{"code": "V70.0", "system": "ICD-9-CM"}],
                           diagnosis_pointers=[1]))
        assert rules(found) == {("scrub.icd10_format", "diagnoses[0].code")}

    @pytest.mark.parametrize("code", ["99213", "3072F", "0042T", "0001U", "G0439", "J3490"])
    def test_procedure_code_valid(self, code: str) -> None:
        """CPT (5 digits or 4 + F/T/U) and HCPCS II (letter + 4 digits) pass."""
        assert scrub(good(**{"procedure.code": code})) == []

    @pytest.mark.parametrize("code", ["9921", "992134", "W1234", "OV-EST-3", "3072X"])
    def test_procedure_code_invalid(self, code: str) -> None:
        """Other shapes (an internal chargemaster code, HCPCS letter W) are held."""
        assert rules(scrub(good(**{"procedure.code": code}))) == {
            ("scrub.procedure_code_format", "procedure.code")}

    def test_place_of_service(self) -> None:
        """POS must be in the CMS list: 11 and 10 pass, 00 and 98 do not."""
        assert scrub(good(place_of_service="10")) == []
        for pos in ("00", "98"):
            assert rules(scrub(good(place_of_service=pos))) == {
                ("scrub.place_of_service", "place_of_service")}


class TestModifiers:
    def test_at_most_four(self) -> None:
        """Five modifiers on a line are held."""
        found = scrub(good(**{"procedure.modifiers": ["25", "59", "XE", "RT", "GA"]}))
        assert [f.message for f in found] == ["5 modifiers on one line; an 837P line carries "
                                              "at most 4"]

    def test_each_in_the_configured_list(self) -> None:
        """A modifier outside the configured list is held; one in it passes."""
        settings = {"allowed_modifiers": ["25", "59"]}
        assert scrub(good(), settings) == []
        found = scrub(good(**{"procedure.modifiers": ["25", "ZZ"]}), settings)
        assert len(found) == 1 and "'ZZ'" in found[0].message

    def test_telehealth_needs_95_or_gt_where_the_payer_says_so(self) -> None:
        """POS 02/10 without 95/GT is held for listed payers only."""
        virtual = good(place_of_service="10", **{"procedure.modifiers": []})
        assert rules(scrub(virtual, {"telehealth_payers": ["00621"]})) == {
            ("scrub.telehealth_modifier", "procedure.modifiers")}
        assert scrub(virtual, {"telehealth_payers": ["99999"]}) == []
        with_95 = good(place_of_service="02", **{"procedure.modifiers": ["95"]})
        assert scrub(with_95, {"telehealth_payers": ["*"]}) == []

    def test_per_payer_telehealth_override(self) -> None:
        """A payer override turns the telehealth requirement on for that payer alone."""
        virtual = good(place_of_service="02", **{"procedure.modifiers": []})
        settings = {"payers": {"00621": {"telehealth_modifier_required": True}}}
        assert len(scrub(virtual, settings)) == 1


class TestDatesUnitsPointers:
    def test_service_date_in_the_future(self) -> None:
        """A date of service after today is held."""
        assert rules(scrub(good(service_date="2024-06-02", **{
            "encounter.discharge_date": None}))) == {("scrub.service_date", "service_date")}

    def test_service_date_before_birth(self) -> None:
        """A date of service before the patient's birth is held."""
        found = scrub(good(**{"patient.birth_date": "2024-03-16",
                              "encounter.admit_date": None}))
        assert [f.field for f in found] == ["service_date"] and "birth" in found[0].message

    def test_service_date_outside_admit_discharge(self) -> None:
        """A date outside the encounter's admit-discharge dates is held."""
        early = scrub(good(service_date="2024-03-14"))
        late = scrub(good(service_date="2024-03-16"))
        assert "admit" in early[0].message and "discharge" in late[0].message
        end_first = scrub(good(service_date_end="2024-03-14"))
        assert ("scrub.service_date", "service_date_end") in rules(end_first)

    def test_units_and_amount_positive_for_charges(self) -> None:
        """A charge needs units and amount above zero."""
        found = rules(scrub(good(units="0", amount="-1.00")))
        assert found == {("scrub.units_amount", "units"), ("scrub.units_amount", "amount")}

    def test_credit_amount_negative(self) -> None:
        """A credit's amount must be negative; a negative credit passes."""
        assert scrub(good(transaction_type="credit", amount="-145.00")) == []
        assert rules(scrub(good(transaction_type="credit"))) == {("scrub.units_amount",
                                                                 "amount")}

    def test_diagnosis_pointers(self) -> None:
        """Pointers must point at existing diagnoses, at most 4 of them."""
        assert rules(scrub(good(diagnosis_pointers=[1, 3]))) == {
            ("scrub.diagnosis_pointers", "diagnosis_pointers")}
        five = [{"code": c} for c in ("E11.9", "I10", "J06.9", "R05.9", "Z00.00")]
        found = scrub(good(diagnoses=five, diagnosis_pointers=[1, 2, 3, 4, 5]))
        assert [f.message for f in found] == [
            "5 diagnosis pointers; a line points at most at 4 diagnoses"]


class TestAcrossCharges:
    def _batch(self, codes_per_line: list[list[str]]) -> list[Charge]:
        return [good(charge_id=f"ch_{i}", diagnoses=[{"code": c} for c in codes],
                     diagnosis_pointers=[1], **{"procedure.code": f"9921{i}"})
                for i, codes in enumerate(codes_per_line)]

    def test_at_most_twelve_diagnoses_per_claim(self) -> None:
        """Thirteen distinct diagnoses across one encounter's lines hold every line."""
        codes = [f"E11.{i}" for i in range(7)] + [f"I1{i}" for i in range(6)]
        batch = self._batch([codes[:7], codes[7:]])
        found = Scrubber(today=lambda: TODAY).scrub(batch)
        assert all(("scrub.diagnoses_per_claim", "diagnoses") in rules(found[c.charge_id])
                   for c in batch)
        twelve = self._batch([codes[:6], codes[6:12]])
        assert all(v == [] for v in Scrubber(today=lambda: TODAY).scrub(twelve).values())

    def test_duplicate_against_the_store(self) -> None:
        """A charge whose key the store has seen within the window is held."""
        keys: list[str] = []

        def seen(key: str) -> bool:
            keys.append(key)
            return True

        found = scrub(good(), is_duplicate=seen)
        assert rules(found) == {("scrub.duplicate", "procedure.code")}
        assert keys == [duplicate_key(good())] == ["MRN1|2024-03-15|99213|25"]
        assert scrub(good(), is_duplicate=lambda key: False) == []

    def test_duplicate_within_the_batch_and_credits(self) -> None:
        """The same code twice in one message is held once; a credit is never a duplicate."""
        first, second = good(charge_id="a"), good(charge_id="b")
        credit = good(charge_id="c", transaction_type="credit", amount="-145.00")
        found = Scrubber(today=lambda: TODAY).scrub([first, second, credit])
        assert (found["a"], rules(found["b"]), found["c"]) == (
            [], {("scrub.duplicate", "procedure.code")}, [])

    def test_duplicate_key_sorts_modifiers(self) -> None:
        """Modifier order does not change the duplicate key."""
        assert duplicate_key(good(**{"procedure.modifiers": ["TC", "26"]})) == duplicate_key(
            good(**{"procedure.modifiers": ["26", "TC"]}))

    def test_window_in_seconds(self) -> None:
        """The store is asked about the configured number of days."""
        assert Scrubber(ScrubSettings(duplicate_window_days=2)).duplicate_window_seconds == 172800


class TestPriorAuthorization:
    def test_required_for_configured_codes_and_payers(self) -> None:
        """A configured code for a configured payer needs an authorization number."""
        settings = {"prior_auth": [{"codes": ["99213"], "payers": ["00621"]}]}
        assert rules(scrub(good(), settings)) == {("scrub.prior_authorization",
                                                   "prior_authorization")}
        assert scrub(good(prior_authorization="AUTH-1"), settings) == []
        other_payer = {"prior_auth": [{"codes": ["99213"], "payers": ["60054"]}]}
        assert scrub(good(), other_payer) == []


class TestSettings:
    def test_disable_and_downgrade_rules(self) -> None:
        """A rule can be switched off or made a warning, globally or for one payer."""
        bad_npi = good(**{"rendering_provider.npi": "1234567890"})
        off = {"rules": {"npi_check_digit": {"enabled": False}}}
        assert scrub(bad_npi, off) == []
        warn = scrub(bad_npi, {"rules": {"npi_check_digit": {"severity": "warn"}}})
        assert [f.severity for f in warn] == ["warn"]
        payer_off = {"payers": {"00621": {"rules": {"npi_check_digit": {"enabled": False}}}}}
        assert scrub(bad_npi, payer_off) == []

    def test_per_payer_modifier_list(self) -> None:
        """A payer's own modifier list replaces the global one for its charges."""
        settings = {"allowed_modifiers": ["25"], "payers": {"00621": {"allowed_modifiers": []}}}
        assert scrub(good(**{"procedure.modifiers": ["ZZ"]}), settings) == []

    def test_unknown_rule_and_key_are_refused(self) -> None:
        """Misspelt rule ids and settings keys fail validation with a hint."""
        with pytest.raises(ValidationError, match="did you mean 'modifiers'"):
            ScrubSettings.model_validate({"rules": {"modifier": {"enabled": False}}})
        with pytest.raises(ValidationError):
            ScrubSettings.model_validate({"duplicate_window": 3})

    def test_findings_are_biller_readable(self) -> None:
        """Every finding names its rule, field and a sentence without internal jargon."""
        found = scrub(good(units="0", **{"procedure.code": "OV-EST-3"}))
        for finding in found:
            assert finding.rule.startswith("scrub.") and finding.field
            assert finding.message[0].isupper()
        assert Decimal("0") == good(units="0").units
