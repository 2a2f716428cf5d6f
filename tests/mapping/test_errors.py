"""Mapping problems are reported as `file:line:col: where: what`, with did-you-mean hints,
and several problems are reported in one go."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.mapping import load_mapping
from tests.mapping.helpers import write


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_mapping(path)
    return caught.value.problems


class TestSchemaErrors:
    def test_unknown_key_points_at_the_key_with_a_hint(self, tmp_path: Path) -> None:
        """A misspelt key is reported at its own line and column with the closest key."""
        path = write(tmp_path, "m.yaml", 'version: "1"\nfields:\n  patient.mrn: {pth: PID-3}\n')
        assert problems_of(path) == [
            f"{path}:3:17: fields.patient.mrn.pth: unknown key 'pth' (did you mean 'path'?)"]

    def test_missing_version_and_bad_type(self, tmp_path: Path) -> None:
        """version: is required in every mapping; an unknown type lists the valid ones."""
        path = write(tmp_path, "m.yaml", "fields:\n  units: {path: FT1-10, type: number}\n")
        found = problems_of(path)
        assert any(p.startswith(f"{path}:1:1: version:") for p in found)
        assert any(":2:" in p and "'decimal'" in p for p in found if "units.type" in p)

    def test_yaml_syntax_error_has_a_position(self, tmp_path: Path) -> None:
        """Broken YAML is reported where the parser stopped."""
        path = write(tmp_path, "m.yaml", 'version: "1"\nfields: {a: [\n')
        (problem,) = problems_of(path)
        assert problem.startswith(f"{path}:3:") and "yaml" in problem


class TestMeaningErrors:
    def test_every_problem_is_reported_with_hints(self, tmp_path: Path) -> None:
        """Unknown fields, segments, tables, columns, normalizers and bad expressions are all
        reported in one run, each with its position."""
        write(tmp_path, "tables/locations.csv", "location,pos\nNCFM,11\n")
        path = write(tmp_path, "m.yaml", """\
            version: "1"
            iterate: FT1
            tables:
              locations: {file: tables/locations.csv}
              cdm: {file: tables/chargemastr.csv}
            fields:
              procedure.cod: FT1-25.1
              place_of_service: {path: PDI-3.1, lookup: locatons.pos}
              encounter.location: {path: PV1-3.1, lookup: locations.poss}
              units: {path: FT1-10, normalize: [uper]}
              amount: {expr: "charge.units *"}
              coverage: {each: IN1, fields: {payer: IN1-3.1}}
            rules:
              - {name: r, set: {procedur.code: "1"}}
            """)
        found = problems_of(path)
        expected = [
            ("5:", "tables.cdm.file", "did you mean 'tables/locations.csv'?"),
            ("7:3", "fields.procedure.cod", "did you mean 'procedure.code'?"),
            ("8:", "fields.place_of_service.path", "did you mean 'PID'?"),
            ("8:", "fields.place_of_service.lookup.table", "did you mean 'locations'?"),
            ("9:", "fields.encounter.location.lookup.column", "did you mean 'pos'?"),
            ("10:", "fields.units.normalize.0", "did you mean 'upper'?"),
            ("11:", "fields.amount.expr", "does not parse"),
            ("12:", "fields.coverage.fields.payer", "did you mean 'payer_id'?"),
            ("14:", "rules.0.set.procedur.code", "did you mean 'procedure.code'?"),
        ]
        for position, where, hint in expected:
            assert any(p.startswith(f"{path}:{position}") and f": {where}: " in p and hint in p
                       for p in found), (position, where, found)

    def test_errors_in_a_base_mapping_name_the_base_file(self, tmp_path: Path) -> None:
        """A problem inside an extended base is reported in the base file."""
        base = write(tmp_path, "base.yaml", 'version: "1"\nfields:\n  procedure.cod: FT1-25\n')
        site = write(tmp_path, "site.yaml", 'version: "2"\nextends: base.yaml\n')
        (problem,) = problems_of(site)
        assert problem.startswith(f"{base}:3:3: fields.procedure.cod")

    def test_missing_base_and_cycles(self, tmp_path: Path) -> None:
        """A missing base file or an extends cycle is a clear problem, not a crash."""
        lonely = write(tmp_path, "a.yaml", 'version: "1"\nextends: nope.yaml\n')
        assert "extends: file not found: nope.yaml" in problems_of(lonely)[0]
        write(tmp_path, "x.yaml", 'version: "1"\nextends: y.yaml\n')
        cyc = write(tmp_path, "y.yaml", 'version: "1"\nextends: x.yaml\n')
        assert "cycle" in problems_of(cyc)[0]

    def test_a_bad_constant_is_a_load_error(self, tmp_path: Path) -> None:
        """A default that is not a valid value of the field's type fails at load."""
        path = write(tmp_path, "m.yaml", 'version: "1"\nfields:\n'
                                         '  service_date: {path: FT1-4, default: soon}\n')
        (problem,) = problems_of(path)
        assert ": fields.service_date.default: 'soon' is not a valid date" in problem

    def test_table_with_duplicate_keys(self, tmp_path: Path) -> None:
        """A table with a repeated key is refused with the row number."""
        write(tmp_path, "t.csv", "code,cpt\nA,1\nA,2\n")
        path = write(tmp_path, "m.yaml", 'version: "1"\ntables:\n  t: {file: t.csv}\n')
        (problem,) = problems_of(path)
        assert "tables.t.file" in problem and "duplicate key 'A'" in problem
