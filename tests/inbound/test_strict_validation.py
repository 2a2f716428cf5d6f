"""Strict validation with hl7apy: conforming messages pass; a broken one yields an AckError
naming segment and field, and never echoes the offending value (it may be PHI)."""

from __future__ import annotations

import pytest

from engine.hl7.ack import build_ack
from engine.hl7.reader import parse
from engine.hl7.strict import strict_problem
from tests.inbound.conftest import sample

VISIT = sample("dft_p03_office_visit")


class TestStrictProblem:
    @pytest.mark.parametrize("name", ["dft_p03_office_visit", "dft_p03_chargemaster",
                                      "adt_a04_register", "adt_a08_update"])
    def test_samples_conform(self, name: str) -> None:
        """The shipped samples (Z-segment included) pass strict validation."""
        assert strict_problem(sample(name)) is None

    def test_bad_birth_date_names_pid_7_without_the_value(self) -> None:
        """An impossible PID-7 date is a data type error on PID-7; the date is not echoed."""
        problem = strict_problem(VISIT.replace(b"||19780412|F|", b"||19781399|F|"))
        assert problem is not None
        assert (problem.segment, problem.sequence, problem.field, problem.code) == (
            "PID", 1, 7, 102)
        assert "19781399" not in problem.text

    def test_non_numeric_quantity_names_the_ft1_field(self) -> None:
        """A non-numeric FT1-10 in the first FT1 points at FT1-10 of occurrence 1."""
        problem = strict_problem(VISIT.replace(b"|||1|145.00|145.00|", b"|||abc|145.00|145.00|",
                                               1))
        assert problem is not None
        assert (problem.segment, problem.sequence, problem.field) == ("FT1", 1, 10)

    def test_missing_required_field(self) -> None:
        """An empty PID-3 (required) is error 101 on PID-3."""
        problem = strict_problem(VISIT.replace(b"PID|1||MRN100234^^^NORTHCLINIC^MR|",
                                               b"PID|1|||"))
        assert problem is not None
        assert (problem.segment, problem.field, problem.code) == ("PID", 3, 101)

    def test_missing_required_segment(self) -> None:
        """A DFT^P03 without EVN breaks its structure: the ERR names EVN."""
        raw = b"\r".join(s for s in VISIT.split(b"\r") if not s.startswith(b"EVN"))
        problem = strict_problem(raw)
        assert problem is not None and problem.segment == "EVN" and problem.code == 100

    def test_unknown_segment(self) -> None:
        """A non-Z segment the version does not define is named."""
        problem = strict_problem(VISIT.replace(b"EVN|P03", b"EVN|P03\rXYZ|1", 1))
        assert problem is not None and problem.segment == "XYZ"

    def test_unsupported_version_points_at_msh_12(self) -> None:
        """A version hl7apy does not know is error 203 on MSH-12."""
        problem = strict_problem(VISIT.replace(b"|2.5.1|", b"|9.9|", 1))
        assert problem is not None and (problem.field, problem.code) == (12, 203)

    def test_problem_becomes_an_err_segment(self) -> None:
        """The AckError renders as an ERR naming PID^1^7 in a v2.5.1 ACK."""
        raw = VISIT.replace(b"||19780412|F|", b"||19781399|F|")
        problem = strict_problem(raw)
        ack = build_ack(parse(raw), "AE", error=problem)
        assert "ERR||PID^1^7|102" in ack
