"""The functions behind `chargebridge map`, `test` and `check`: text, JSON and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from engine.mapping.tools import check_mapping_files, map_files, run_mapping_tests
from tests.mapping.helpers import MAPPINGS, SAMPLES, write

STANDARD = MAPPINGS / "dft_p03.yaml"


class TestMapFiles:
    def test_table_shows_charges_dropped_lines_and_findings(self, tmp_path: Path) -> None:
        """The table lists one row per charge, its findings, and the line counts."""
        text, code = map_files(STANDARD, [SAMPLES / "dft_p03_office_visit.hl7"])
        assert code == 0
        assert "99213" in text and "93000" in text and "36415" in text
        assert "3 line(s) in, 3 charge(s), 0 dropped" in text

    def test_json_has_charges_and_findings(self) -> None:
        """--format json prints {"charges": [...], "findings": [...]} with the Charge JSON."""
        text, code = map_files(STANDARD, [SAMPLES / "dft_p03_credit.hl7"], fmt="json")
        doc = json.loads(text)
        assert code == 0 and doc["findings"] == []
        (charge,) = doc["charges"]
        assert (charge["transaction_type"], charge["amount"], charge["service_date"]) == (
            "credit", "-55.00", "2024-03-15")

    def test_explain_lists_the_source_of_each_field(self) -> None:
        """--explain adds, per charge, the path/lookup/rule behind every field."""
        text, _ = map_files(STANDARD, [SAMPLES / "dft_p03_chargemaster.hl7"], fmt="json",
                            explain=True)
        fields = json.loads(text)["explain"][0]["fields"]
        assert fields["procedure.code"] == "FT1-7.1 -> lookup chargemaster.cpt"

    def test_findings_include_scrub_rules(self, tmp_path: Path) -> None:
        """The dry run shows scrub findings, so analysts see rejections early."""
        message = (SAMPLES / "dft_p03_office_visit.hl7").read_text().replace(
            "1234567893", "1234567890")
        sample = write(tmp_path, "bad_npi.hl7", message)
        text, code = map_files(STANDARD, [sample], fmt="json")
        rules = {f["rule"] for f in json.loads(text)["findings"]}
        assert code == 0 and "scrub.npi_check_digit" in rules

    def test_failures_exit_non_zero(self, tmp_path: Path) -> None:
        """A mapping that does not load, or a file that is not HL7, exits 1."""
        bad = write(tmp_path, "bad.yaml", "fields: {}\n")
        text, code = map_files(bad, [SAMPLES / "dft_p03_credit.hl7"])
        assert code == 1 and "version" in text
        junk = write(tmp_path, "junk.hl7", "hello\n")
        text, code = map_files(STANDARD, [junk])
        assert code == 1 and "no HL7 message found" in text


class TestRunMappingTests:
    def test_the_repository_mapping_tests_pass(self) -> None:
        """Every mapping test shipped in mappings/tests passes."""
        paths = sorted((MAPPINGS / "tests").glob("*.test.yaml"))
        text, code = run_mapping_tests(paths)
        assert code == 0, text
        assert text.endswith(" passed, 0 failed") and "FAIL" not in text

    def test_a_failing_test_shows_expected_and_actual(self, tmp_path: Path) -> None:
        """A mismatch fails with a diff: the field, the expected and the mapped value."""
        path = write(tmp_path, "m.test.yaml", f"""\
            mapping: {STANDARD}
            tests:
              - name: wrong amount
                input: {SAMPLES / "dft_p03_credit.hl7"}
                expect:
                  charges:
                    - {{amount: "55.00", procedure.code: "93000"}}
                  findings:
                    - {{charge: 1, rule: scrub.duplicate}}
            """)
        text, code = run_mapping_tests([path])
        assert code == 1
        assert "FAIL" in text and "charge 1 amount:" in text
        assert '-   "55.00"' in text and '+   "-55.00"' in text
        assert "- finding {'charge': 1, 'rule': 'scrub.duplicate'}" in text
        assert "0 passed, 1 failed" in text

    def test_no_tests_is_a_failure(self) -> None:
        """Running with no test files is an error, not a silent pass."""
        assert run_mapping_tests([])[1] == 1


class TestCheckMappingFiles:
    def test_shipped_mappings_are_clean(self) -> None:
        """The standard, site and FHIR mappings load without problems."""
        paths = sorted(MAPPINGS.glob("*.yaml"))
        assert len(paths) >= 4
        assert check_mapping_files(paths) == []

    def test_problems_are_located(self, tmp_path: Path) -> None:
        """A broken mapping yields file:line:col problems."""
        bad = write(tmp_path, "bad.yaml", 'version: "1"\nfields:\n  patient.mrm: PID-3\n')
        (problem,) = check_mapping_files([bad])
        assert problem.startswith(f"{bad}:3:3: fields.patient.mrm:")
        assert "did you mean 'patient.mrn'?" in problem
