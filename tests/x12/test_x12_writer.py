"""Tests for engine.x12.writer: 837P files pyx12 accepts, and the loops they must hold."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from engine.charge import Charge
from engine.x12.claims import Correction, group_claims
from engine.x12.errors import ClaimDataError, X12Error
from engine.x12.settings import X12Settings
from engine.x12.validate import validate_837
from engine.x12.writer import ControlNumbers, render_837p

MakeCharge = Callable[..., Charge]
Segments = Callable[[str], list[list[str]]]
NOW = datetime(2024, 3, 5, 14, 7)


def render(
    charges: list[Charge], settings: X12Settings,
    corrections: dict[str, Correction] | None = None,
) -> str:
    claims = group_claims(charges, settings, corrections)
    return render_837p(claims, settings, ControlNumbers(41, 42, 43), now=NOW)


def assert_valid(text: str) -> None:
    result = validate_837(text)
    assert result.ok, "\n".join(result.errors)
    assert result.errors == []


def ids(segs: list[list[str]], seg_id: str) -> list[list[str]]:
    return [s for s in segs if s[0] == seg_id]


class TestValidFiles:
    def test_one_claim_with_three_lines(
        self, make_charge: MakeCharge, x12_settings: X12Settings, segments: Segments,
    ) -> None:
        """An office visit with three lines becomes one pyx12-valid claim with LX 1..3."""
        charges = [make_charge(i, procedure={"code": c}, amount=a) for i, (c, a) in
                   enumerate([("99214", "165.00"), ("81002", "12.50"), ("36415", "9")], 1)]
        text = render(charges, x12_settings)
        assert_valid(text)
        segs = segments(text)
        [clm] = ids(segs, "CLM")
        assert clm[2] == "186.50" and clm[5] == "11:B:1" and clm[6:] == ["Y", "A", "Y", "Y"]
        assert [s[1] for s in ids(segs, "LX")] == ["1", "2", "3"]
        assert ids(segs, "HI") == [["HI", "ABK:E119", "ABF:I10"]]
        assert ["SBR", "P", "18", "GRP7781", "", "", "", "", "", "CI"] in segs
        assert not ids(segs, "PAT")  # the patient is the subscriber: no 2000C
        assert ["NM1", "PR", "2", "BLUE CROSS BLUE SHIELD OF ILLINOIS", "", "", "", "", "PI",
                "00621"] in segs
        assert ["REF", "EI", "371234567"] in segs
        assert ["PRV", "BI", "PXC", "207Q00000X"] in segs
        assert text.endswith("IEA*1*000000041~\n")

    def test_patient_who_is_not_the_subscriber_gets_2000c(
        self, make_charge: MakeCharge, x12_settings: X12Settings, segments: Segments,
    ) -> None:
        """A child on a parent's policy: 2000B names the parent, 2000C PAT/QC the child."""
        coverage = [{
            "payer_name": "Aetna", "payer_id": "60054", "member_id": "W200114422",
            "group_number": "0881234", "relationship": "CHD",
            "subscriber": {"last_name": "Okafor", "first_name": "Chidi",
                           "birth_date": "1979-01-30", "sex": "M"},
        }]
        child = {**make_charge().patient.model_dump(mode="json"), "first_name": "Ife",
                 "birth_date": "2016-05-02"}
        text = render([make_charge(1, patient=child, coverage=coverage)], x12_settings)
        assert_valid(text)
        segs = segments(text)
        assert ids(segs, "HL") == [["HL", "1", "", "20", "1"], ["HL", "2", "1", "22", "1"],
                                   ["HL", "3", "2", "23", "0"]]
        assert ["SBR", "P", "", "0881234", "", "", "", "", "", "CI"] in segs
        assert ["PAT", "19"] in segs
        assert ["NM1", "IL", "1", "OKAFOR", "CHIDI", "", "", "", "MI", "W200114422"] in segs
        assert ["NM1", "QC", "1", "OKAFOR", "IFE", "N"] in segs
        assert ["DMG", "D8", "20160502", "F"] in segs

    def test_120_lines_make_three_valid_claims(
        self, make_charge: MakeCharge, x12_settings: X12Settings, segments: Segments,
    ) -> None:
        """120 lines of one encounter give three claims of 50/50/20 lines in a valid file."""
        text = render([make_charge(i) for i in range(1, 121)], x12_settings)
        assert_valid(text)
        segs = segments(text)
        assert len(ids(segs, "CLM")) == 3
        assert [s[1] for s in ids(segs, "LX")].count("50") == 2
        assert len(ids(segs, "LX")) == 120

    def test_fifteen_diagnoses_split_and_stay_valid(
        self, make_charge: MakeCharge, x12_settings: X12Settings, segments: Segments,
    ) -> None:
        """Fifteen pointed diagnoses give two claims whose HI and SV107 pointers agree."""
        codes = ["E11.9", "I10", "E78.5", "Z79.4", "N18.30", "M54.50", "J45.909", "K21.9",
                 "F41.1", "G47.33", "E66.9", "R73.03", "L40.0", "H52.4", "Z00.00"]
        charges = [make_charge(i + 1, diagnoses=[{"code": c}], diagnosis_pointers=[1])
                   for i, c in enumerate(codes)]
        text = render(charges, x12_settings)
        assert_valid(text)
        segs = segments(text)
        first, second = ids(segs, "HI")
        assert len(first) == 13 and first[1] == "ABK:E119" and first[12] == "ABF:R7303"
        assert second == ["HI", "ABK:L400", "ABF:H524", "ABF:Z0000"]
        pointers = [s[7] for s in ids(segs, "SV1")]
        assert pointers == [str(i) for i in range(1, 13)] + ["1", "2", "3"]

    def test_void_claim_with_payer_claim_number(
        self, make_charge: MakeCharge, x12_settings: X12Settings, segments: Segments,
    ) -> None:
        """A credit sent as a void is frequency 8 with REF*F8 naming the payer's claim."""
        credit = make_charge(9, transaction_type="credit", amount="-165.00")
        text = render([credit], x12_settings,
                      corrections={credit.charge_id: ("8", "24065000123")})
        assert_valid(text)
        segs = segments(text)
        [clm] = ids(segs, "CLM")
        assert clm[2] == "165.00" and clm[5] == "11:B:8"
        assert ["REF", "F8", "24065000123"] in segs

    def test_range_dates_modifiers_rendering_and_prior_auth(
        self, make_charge: MakeCharge, x12_settings: X12Settings, segments: Segments,
    ) -> None:
        """RD8 ranges, four modifiers, line POS, 2310B and REF*G1 come out valid."""
        charges = [
            make_charge(1, procedure={"code": "97110", "modifiers": ["GP", "59", "KX", "rt"]},
                        units="4", service_date="2024-03-01", service_date_end="2024-03-03",
                        prior_authorization="AUTH-5521"),
            make_charge(2, procedure={"code": "G0283"}, place_of_service="22",
                        prior_authorization="AUTH-5521"),
        ]
        text = render(charges, x12_settings)
        assert_valid(text)
        segs = segments(text)
        sv1 = ids(segs, "SV1")
        assert sv1[0][1] == "HC:97110:GP:59:KX:RT" and sv1[0][4] == "4"
        assert sv1[1][5] == "22" and sv1[0][5] == ""
        assert ["DTP", "472", "RD8", "20240301-20240303"] in segs
        assert ["DTP", "472", "D8", "20240304"] in segs
        assert ["NM1", "82", "1", "LINDQVIST", "MAJA", "", "", "", "XX", "1987654328"] in segs
        assert ids(segs, "REF").count(["REF", "G1", "AUTH-5521"]) == 1
        assert ["REF", "6R", charges[0].charge_id] in segs


class TestStructure:
    def test_rendering_equal_to_billing_has_no_2310b(
        self, make_charge: MakeCharge, x12_settings: X12Settings, segments: Segments,
    ) -> None:
        """When the rendering NPI is the billing NPI, no NM1*82 is written."""
        charge = make_charge(1, rendering_provider={"npi": "1234567893", "last_name": "X"})
        segs = segments(render([charge], x12_settings))
        assert not [s for s in segs if s[:2] == ["NM1", "82"]]
        assert [s for s in segments(render([make_charge(2)], x12_settings))
                if s[:2] == ["NM1", "82"]]

    def test_control_numbers_land_in_isa_gs_st(
        self, make_charge: MakeCharge, x12_settings: X12Settings, segments: Segments,
    ) -> None:
        """ISA13/IEA02, GS06/GE02 and ST02/SE02 carry the numbers the caller gave."""
        claims = group_claims([make_charge(1)], x12_settings)
        text = render_837p(claims, x12_settings, ControlNumbers(123456, 789, 31), now=NOW)
        segs = segments(text)
        isa = text.split("~")[0]
        assert len(isa) == 105 and isa.split("*")[13] == "000123456"
        assert isa.split("*")[9:11] == ["240305", "1407"] and isa.split("*")[15] == "T"
        assert ids(segs, "GS")[0][6] == "789" and ids(segs, "GE")[0] == ["GE", "1", "789"]
        assert ids(segs, "ST")[0][2] == "0031" and ids(segs, "SE")[0][2] == "0031"
        assert ids(segs, "IEA")[0] == ["IEA", "1", "000123456"]
        st = next(i for i, s in enumerate(segs) if s[0] == "ST")
        se = next(i for i, s in enumerate(segs) if s[0] == "SE")
        assert int(segs[se][1]) == se - st + 1

    def test_delimiters_in_data_are_removed(
        self, make_charge: MakeCharge, x12_settings: X12Settings, segments: Segments,
    ) -> None:
        """*, :, ~ and ^ inside names never split an element or a segment."""
        patient = {**make_charge().patient.model_dump(mode="json"),
                   "last_name": "O'Brien*Smith~", "first_name": "Zoë:Ann^"}
        text = render([make_charge(1, patient=patient)], x12_settings)
        segs = segments(text)
        assert ["NM1", "IL", "1", "O'BRIEN SMITH", "ZOE ANN", "N", "", "", "MI",
                "XOF884512207"] in segs

    def test_a_name_of_only_delimiters_is_refused(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """A required name that cleans to nothing raises ClaimDataError, not a bad file."""
        patient = {**make_charge().patient.model_dump(mode="json"), "last_name": "*~"}
        with pytest.raises(ClaimDataError) as info:
            render([make_charge(3, patient=patient)], x12_settings)
        assert info.value.field == "patient.last_name"

    def test_no_claims_and_bad_control_numbers_are_refused(
        self, make_charge: MakeCharge, x12_settings: X12Settings,
    ) -> None:
        """An empty batch or a control number out of range raises X12Error."""
        with pytest.raises(X12Error):
            render_837p([], x12_settings, ControlNumbers(1, 1, 1))
        claims = group_claims([make_charge(1)], x12_settings)
        with pytest.raises(X12Error, match="interchange"):
            render_837p(claims, x12_settings, ControlNumbers(1_000_000_000, 1, 1))
