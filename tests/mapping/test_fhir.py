"""The FHIR ChargeItem mapping on a hand-written ChargeItem/Patient/Encounter/Coverage
context: status handling, codes, prices, NPI, diagnoses, telehealth and coverage."""

from __future__ import annotations

import copy
import json
from decimal import Decimal

from engine.charge import make_charge_id
from engine.mapping import load_mapping
from tests.mapping.helpers import MAPPINGS

CONTEXT = json.loads((MAPPINGS / "tests" / "messages" / "fhir_office_visit_context.json")
                     .read_text())
MAPPING = load_mapping(MAPPINGS / "fhir_chargeitem.yaml")


def single(item_index: int) -> dict:
    """The context with only one of its ChargeItems, as the FHIR channel passes it."""
    context = copy.deepcopy(CONTEXT)
    context["ChargeItem"] = context["ChargeItem"][item_index]
    return context


class TestFhirChargeItemMapping:
    def test_billable_cpt_item(self) -> None:
        """A billable CPT ChargeItem becomes a charge with patient, NPI, dx and coverage."""
        (mapped,) = MAPPING.apply(single(0), channel="fhir").charges
        charge = mapped.charge
        assert (charge.transaction_type, charge.procedure.code, charge.procedure.system) == (
            "charge", "99213", "CPT")
        assert charge.amount == Decimal("145.00")
        assert charge.rendering_provider.npi == "1654321987"
        assert [d.code for d in charge.diagnoses] == ["J20.9"]
        assert charge.place_of_service == "02"
        assert (charge.patient.mrn, charge.patient.sex, str(charge.patient.birth_date)) == (
            "MRN900100", "F", "1990-11-02")
        assert [(c.payer_id, c.member_id, c.relationship) for c in charge.coverage] == [
            ("60054", "W900100771", "01")]
        assert mapped.findings == []

    def test_hcpcs_price_from_fee_schedule_times_quantity_and_factor(self) -> None:
        """Without priceOverride the fee schedule price x quantity x factorOverride is used."""
        charge = MAPPING.apply(single(1), channel="fhir").charges[0].charge
        assert (charge.procedure.code, charge.procedure.system) == ("J3420", "HCPCS")
        assert (charge.units, charge.amount) == (Decimal("2"), Decimal("18.00"))

    def test_not_billable_is_dropped_with_a_reason(self) -> None:
        """not-billable and aborted ChargeItems are dropped, the reason recorded."""
        result = MAPPING.apply(single(2), channel="fhir")
        assert result.charges == [] and result.lines_in == 1
        assert result.dropped == [("ChargeItem/ci-9003",
                                   "not_billable: ChargeItem status not-billable: nothing to bill")]

    def test_entered_in_error_is_a_credit_with_its_own_id(self) -> None:
        """entered-in-error becomes a credit with a negative amount and a distinct id."""
        charge = MAPPING.apply(single(3), channel="fhir").charges[0].charge
        assert (charge.transaction_type, charge.amount) == ("credit", Decimal("-55.00"))
        assert charge.charge_id == make_charge_id("fhir", "fhir", "ChargeItem/ci-9004#credit")

    def test_planned_item_is_held(self) -> None:
        """A status that is not billable yet holds the charge with a readable reason."""
        context = single(0)
        context["ChargeItem"]["status"] = "planned"
        (mapped,) = MAPPING.apply(context, channel="fhir").charges
        assert [(f.rule, f.severity) for f in mapped.findings] == [
            ("mapping.rule.status_not_billable_yet", "hold")]
        assert "planned" in mapped.findings[0].message

    def test_every_item_of_a_list_is_mapped(self) -> None:
        """A context with several ChargeItems yields one line each; ids follow identifiers."""
        result = MAPPING.apply(CONTEXT, channel="fhir")
        assert (result.lines_in, len(result.charges), len(result.dropped)) == (4, 3, 1)
        assert result.charges[0].charge.source["line_id"] == (
            "urn:oid:2.16.840.1.113883.19.5.9|9001-1")
