"""Tests for engine.x12.claims: grouping keys, splits, pointers and charge checks."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from engine.charge import Charge
from engine.x12.claims import charge_problems, group_claims
from engine.x12.errors import ClaimDataError
from engine.x12.settings import X12Settings

MakeCharge = Callable[..., Charge]


class TestGrouping:
    def test_one_encounter_becomes_one_claim(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """Three charges of one patient, encounter, provider and payer form one claim."""
        charges = [make_charge(i, procedure={"code": c}) for i, c in
                   enumerate(["99214", "81002", "36415"], start=1)]
        [claim] = group_claims(charges, x12_settings)
        assert claim.charge_ids == [c.charge_id for c in charges]
        assert claim.total == Decimal("495.00")
        assert claim.frequency == "1"
        assert [d.code for d in claim.diagnoses] == ["E119", "I10"]
        assert claim.payer.payer_id == "00621"  # from the payer table, not the EHR's id
        assert claim.payer.filing_indicator == "CI"

    def test_encounters_rendering_and_payers_split_claims(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """A different encounter, rendering provider or payer starts a new claim."""
        base = make_charge(1)
        other_encounter = make_charge(2, encounter={"id": "V999"})
        other_rendering = make_charge(
            3, rendering_provider={"npi": "1567890128", "last_name": "Ito"})
        medicare = make_charge(4, coverage=[{
            "payer_name": "Medicare", "payer_id": "12502", "member_id": "1EG4TE5MK73",
            "relationship": "SEL"}])
        claims = group_claims([base, other_encounter, other_rendering, medicare], x12_settings)
        assert len(claims) == 4
        assert claims[3].payer.filing_indicator == "MB"

    def test_claim_id_is_deterministic(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """The same charges always yield the same 20-character claim id, in any order."""
        charges = [make_charge(1), make_charge(2)]
        first = group_claims(charges, x12_settings)[0].claim_id
        again = group_claims(list(reversed(charges)), x12_settings)[0].claim_id
        other = group_claims([make_charge(3)], x12_settings)[0].claim_id
        assert first == again and len(first) == 20
        assert other != first

    def test_120_lines_split_into_three_claims(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """120 service lines of one encounter become claims of 50, 50 and 20 lines."""
        claims = group_claims([make_charge(i) for i in range(1, 121)], x12_settings)
        assert [len(c.lines) for c in claims] == [50, 50, 20]
        assert len({c.claim_id for c in claims}) == 3

    def test_fifteen_diagnoses_split_at_twelve_with_pointers_renumbered(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """Lines needing 15 distinct diagnoses split so each claim's pointers stay in 1..12."""
        codes = [f"M54.{i}" if i < 10 else f"S83.{i - 10}XXA" for i in range(15)]
        charges = [
            make_charge(i + 1, diagnoses=[{"code": code}], diagnosis_pointers=[1])
            for i, code in enumerate(codes)
        ]
        first, second = group_claims(charges, x12_settings)
        assert len(first.diagnoses) == 12 and len(first.lines) == 12
        assert [line.diagnosis_pointers for line in first.lines] == [(i,) for i in range(1, 13)]
        assert [d.code for d in second.diagnoses] == ["S832XXA", "S833XXA", "S834XXA"]
        assert [line.diagnosis_pointers for line in second.lines] == [(1,), (2,), (3,)]

    def test_pointers_follow_the_claims_own_hi_list(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """A line's pointers refer to the claim's HI order, not to the charge's own list."""
        one = make_charge(1, diagnoses=[{"code": "J06.9"}], diagnosis_pointers=[1])
        two = make_charge(2, diagnoses=[{"code": "R05.9"}, {"code": "J06.9"}],
                          diagnosis_pointers=[2, 1])
        [claim] = group_claims([one, two], x12_settings)
        assert [d.code for d in claim.diagnoses] == ["J069", "R059"]
        assert claim.lines[1].diagnosis_pointers == (1, 2)

    def test_at_most_four_pointers_and_unpointed_codes_fill_spare_slots(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """A line keeps four pointers; the rest of its codes still go into HI when room is left."""
        dx = [{"code": c} for c in ["E11.9", "I10", "E78.5", "Z79.4", "N18.3"]]
        [claim] = group_claims([make_charge(1, diagnoses=dx, diagnosis_pointers=[])],
                               x12_settings)
        assert claim.lines[0].diagnosis_pointers == (1, 2, 3, 4)
        assert [d.code for d in claim.diagnoses] == ["E119", "I10", "E785", "Z794", "N183"]

    def test_grouping_by_service_date_when_configured(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """Adding service_date to the grouping keys gives one claim per day."""
        settings = x12_settings.model_copy(update={
            "claim_grouping": [*x12_settings.claim_grouping, "service_date"]})
        charges = [make_charge(1), make_charge(2, service_date="2024-03-05")]
        assert len(group_claims(charges, settings)) == 2
        assert len(group_claims(charges, x12_settings)) == 1

    def test_shared_prior_authorization_goes_on_the_claim(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """One authorization on every line is claim-level; differing ones stay on lines."""
        [same] = group_claims([make_charge(1, prior_authorization="PA77"),
                               make_charge(2, prior_authorization="PA77")], x12_settings)
        assert same.prior_authorization == "PA77"
        assert all(line.prior_authorization is None for line in same.lines)
        [mixed] = group_claims([make_charge(1, prior_authorization="PA77"),
                                make_charge(2)], x12_settings)
        assert mixed.prior_authorization is None
        assert [line.prior_authorization for line in mixed.lines] == ["PA77", None]


class TestCorrections:
    def test_credit_is_a_void_claim_of_its_own(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """A credit with a void correction is never grouped with original charges."""
        charge = make_charge(1)
        credit = make_charge(2, transaction_type="credit", amount="-165.00")
        claims = group_claims([charge, credit], x12_settings,
                              {credit.charge_id: ("8", "2024123456789")})
        assert [c.frequency for c in claims] == ["1", "8"]
        void = claims[1]
        assert void.payer_claim_number == "2024123456789"
        assert void.total == Decimal("165.00")

    def test_credit_without_correction_is_refused(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """A credit with no void/replacement instruction cannot become an original claim."""
        credit = make_charge(1, transaction_type="credit")
        with pytest.raises(ClaimDataError) as info:
            group_claims([credit], x12_settings)
        assert info.value.field == "transaction_type"
        assert info.value.charge_id == credit.charge_id


class TestChargeChecks:
    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"procedure": {"code": None}}, "procedure.code"),
            ({"procedure": {"code": "PROC1"}}, "procedure.code"),
            ({"procedure": {"code": "99213", "modifiers": ["25", "59", "RT", "GA", "XS"]}},
             "procedure.modifiers"),
            ({"amount": None}, "amount"),
            ({"service_date": None}, "service_date"),
            ({"diagnoses": []}, "diagnoses"),
            ({"diagnoses": [{"code": "E11.9"}], "diagnosis_pointers": [2]},
             "diagnosis_pointers[0]"),
            ({"diagnoses": [{"code": "11.9"}]}, "diagnoses[0].code"),
            ({"place_of_service": None}, "place_of_service"),
            ({"coverage": []}, "coverage"),
            ({"rendering_provider": {"npi": "1234567890", "last_name": "X"}},
             "rendering_provider.npi"),
        ],
    )
    def test_missing_or_bad_data_names_the_field(
        self, make_charge: MakeCharge, x12_settings: X12Settings, changes: dict[str, Any],
        field: str,
    ) -> None:
        """A charge lacking what a claim needs raises ClaimDataError naming charge and field."""
        charge = make_charge(7, **changes)
        with pytest.raises(ClaimDataError) as info:
            group_claims([make_charge(1), charge], x12_settings)
        assert info.value.field == field
        assert charge.charge_id in str(info.value) and field in str(info.value)

    def test_charge_problems_sets_bad_charges_aside(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """charge_problems names only the charges that cannot be billed."""
        good, bad = make_charge(1), make_charge(2, procedure={"code": ""})
        problems = charge_problems([good, bad], x12_settings)
        assert list(problems) == [bad.charge_id]
        assert problems[bad.charge_id].field == "procedure.code"
