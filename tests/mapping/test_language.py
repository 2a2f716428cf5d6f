"""The mapping language: paths, types, normalizers, lookups, records, rules, filters,
extends, provenance and explain — each feature on a small mapping written in the test."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from engine.charge import Charge, make_charge_id
from engine.errors import MappingError
from engine.mapping import load_mapping
from tests.mapping.helpers import IN1, dft, ft1, write

HEAD = """\
version: "1"
input: hl7
iterate: FT1
"""


def mapping(tmp_path: Path, body: str, name: str = "m.yaml") -> object:
    """Load a mapping made of the common head and `body`."""
    return load_mapping(write(tmp_path, name, HEAD + body))


class TestPaths:
    def test_path_fallback_takes_the_first_alternative_with_a_value(self, tmp_path: Path) -> None:
        """`FT1-25.1 | FT1-7.1` reads FT1-7.1 only when FT1-25.1 is empty."""
        m = mapping(tmp_path, "fields:\n  procedure.code: FT1-25.1 | FT1-7.1\n")
        msg = dft(ft1(1, "99213"), ft1(2, "", ft1_7="G0439^AWV^HCPCS"))
        codes = [c.charge.procedure.code for c in m.apply(msg, channel="c").charges]
        assert codes == ["99213", "G0439"]

    def test_repeating_field_fills_a_list(self, tmp_path: Path) -> None:
        """`FT1-26[*].1` yields every repetition for a list field such as modifiers."""
        m = mapping(tmp_path, "fields:\n  procedure.modifiers: FT1-26[*].1\n")
        result = m.apply(dft(ft1(1, modifiers="26^Prof~TC^Tech")), channel="c")
        assert result.charges[0].charge.procedure.modifiers == ["26", "TC"]

    def test_constant_value_and_default(self, tmp_path: Path) -> None:
        """`value:` sets a constant; `default:` fills an empty source."""
        m = mapping(tmp_path, """\
            fields:
              billing_provider.name: {value: North Clinic}
              place_of_service: {path: FT1-16.1, default: "11"}
            """.replace("            ", ""))
        charge = m.apply(dft(ft1(1)), channel="c").charges[0].charge
        assert (charge.billing_provider.name, charge.place_of_service) == ("North Clinic", "11")

    def test_z_segment_paths(self, tmp_path: Path) -> None:
        """A custom Z-segment is read like any other segment."""
        m = mapping(tmp_path, "fields:\n  prior_authorization: ZAU-2\n")
        charge = m.apply(dft(ft1(1), "ZAU|1|AUTH-7781"), channel="c").charges[0].charge
        assert charge.prior_authorization == "AUTH-7781"


class TestTypes:
    def test_types_convert_hl7_text(self, tmp_path: Path) -> None:
        """date, decimal, money and integer turn HL7 text into typed values."""
        m = mapping(tmp_path, """\
fields:
  service_date: FT1-4.1
  units: {path: FT1-10, type: decimal}
  amount: {path: FT1-11.1, type: money}
  diagnosis_pointers: {path: "FT1-19[*].2", type: integer}
""")
        msg = dft(ft1(1, date="202403151030", units="2.5", amount="99.5", dx="E11.9^1~I10^2"))
        charge = m.apply(msg, channel="c").charges[0].charge
        assert charge.service_date == date(2024, 3, 15)
        assert charge.units == Decimal("2.5")
        assert charge.amount == Decimal("99.50")
        assert charge.diagnosis_pointers == [1, 2]

    def test_code_type_trims_and_uppercases(self, tmp_path: Path) -> None:
        """`type: code` trims and upper-cases."""
        m = mapping(tmp_path, "fields:\n  patient.sex: {path: PID-8, type: code}\n")
        msg = dft(ft1(1), pid="PID|1||MRN1||Doe^Jane||19800101| f ")
        assert m.apply(msg, channel="c").charges[0].charge.patient.sex == "F"

    def test_invalid_value_is_a_hold_finding_not_a_failure(self, tmp_path: Path) -> None:
        """A bad date or quantity leaves the field null with a hold naming the field."""
        m = mapping(tmp_path, """\
fields:
  service_date: FT1-4.1
  units: {path: FT1-10, type: decimal}
  procedure.code: FT1-25.1
""")
        result = m.apply(dft(ft1(1, date="20241345", units="two")), channel="c")
        mapped = result.charges[0]
        assert mapped.charge.service_date is None and mapped.charge.units is None
        assert mapped.charge.procedure.code == "99213"
        assert {(f.rule, f.field, f.severity) for f in mapped.findings} == {
            ("mapping.invalid_value", "service_date", "hold"),
            ("mapping.invalid_value", "units", "hold"),
        }


class TestNormalizers:
    def test_trim_upper_strip_zeros_pad_and_split(self, tmp_path: Path) -> None:
        """Normalizers run in order on the text before lookup and type conversion."""
        m = mapping(tmp_path, """\
fields:
  procedure.code: {path: FT1-25.1, normalize: [trim, upper]}
  encounter.id: {path: PV1-19.1, normalize: [strip_leading_zeros]}
  place_of_service: {path: FT1-16.1, normalize: [{pad: 2}]}
  procedure.modifiers: {path: FT1-8, normalize: [{split: " "}]}
""")
        segment = ft1(1, " g0439 ", location="2").replace("|||1|", "|26 TC||1|", 1)
        pv1 = "|".join(["PV1", "1", "O", "LOC", *[""] * 15, "000123"])
        charge = m.apply(dft(segment, pv1=pv1), channel="c").charges[0].charge
        assert charge.procedure.code == "G0439"
        assert charge.encounter.id == "123"
        assert charge.place_of_service == "02"
        assert charge.procedure.modifiers == ["26", "TC"]


class TestLookups:
    TABLES = """\
tables:
  cdm: {file: tables/cdm.csv, key: code}
  pos: {file: tables/pos.yaml}
  kinds: {rows: {CG: charge, CD: credit}}
"""

    def _files(self, tmp_path: Path) -> None:
        write(tmp_path, "tables/cdm.csv", "code,cpt,mods,price\nOV3,99213,,145.00\n"
                                          "XR,71046,26 TC,31\n")
        write(tmp_path, "tables/pos.yaml", "NCFM: '11'\nNCTH: '02'\n")

    def test_csv_yaml_and_inline_tables(self, tmp_path: Path) -> None:
        """A CSV column, a YAML key->value table and inline rows all look up values."""
        self._files(tmp_path)
        m = mapping(tmp_path, self.TABLES + """\
fields:
  transaction_type: {path: FT1-6, lookup: kinds}
  procedure.code: {path: FT1-7.1, lookup: cdm.cpt}
  procedure.modifiers: {path: FT1-7.1, lookup: {table: cdm, column: mods, missing: default}}
  amount: {path: FT1-7.1, lookup: cdm.price, type: money}
  place_of_service: {path: FT1-16.1, lookup: pos}
""")
        msg = dft(ft1(1, "", ft1_7="XR", kind="CD", location="NCTH"))
        charge = m.apply(msg, channel="c").charges[0].charge
        assert charge.transaction_type == "credit"
        assert charge.procedure.code == "71046"
        assert charge.procedure.modifiers == ["26", "TC"]
        assert charge.amount == Decimal("31.00")
        assert charge.place_of_service == "02"

    def test_missing_key_policies(self, tmp_path: Path) -> None:
        """hold adds a finding, default uses the default, keep passes the key through."""
        self._files(tmp_path)
        m = mapping(tmp_path, self.TABLES + """\
fields:
  procedure.code: {path: FT1-7.1, lookup: cdm.cpt}
  procedure.description: {path: FT1-7.1, lookup: {table: cdm, column: cpt, missing: default,
                                                  default: unknown}}
  encounter.location: {path: FT1-16.1, lookup: {table: pos, missing: keep}}
""")
        mapped = m.apply(dft(ft1(1, "", ft1_7="NOPE", location="WARD9")), channel="c").charges[0]
        assert mapped.charge.procedure.code is None
        assert mapped.charge.procedure.description == "unknown"
        assert mapped.charge.encounter.location == "WARD9"
        assert [(f.rule, f.field) for f in mapped.findings] == [
            ("mapping.lookup_missing", "procedure.code")]

    def test_fail_policy_fails_the_message(self, tmp_path: Path) -> None:
        """`missing: fail` raises MappingError, so the message goes to ERROR."""
        self._files(tmp_path)
        m = mapping(tmp_path, self.TABLES +
                    "fields:\n  procedure.code: {path: FT1-7.1, lookup: {table: cdm, column: cpt,"
                    " missing: fail}}\n")
        with pytest.raises(MappingError, match="NOPE"):
            m.apply(dft(ft1(1, "", ft1_7="NOPE")), channel="c")

    def test_else_applies_after_an_empty_lookup(self, tmp_path: Path) -> None:
        """With `missing: default` and no default, `else:` supplies the value."""
        self._files(tmp_path)
        m = mapping(tmp_path, self.TABLES + """\
fields:
  procedure.code:
    path: FT1-7.1
    lookup: {table: cdm, column: cpt, missing: default}
    else: FT1-25.1
""")
        codes = [c.charge.procedure.code for c in
                 m.apply(dft(ft1(1, "93000", ft1_7="ZZ"), ft1(2, "", ft1_7="OV3")),
                         channel="c").charges]
        assert codes == ["93000", "99213"]


class TestRecords:
    def test_coverage_from_every_in1_in_order(self, tmp_path: Path) -> None:
        """`each: IN1` builds one coverage per IN1, ordered by IN1-1 (primary first)."""
        m = mapping(tmp_path, """\
fields:
  coverage:
    each: IN1
    order_by: IN1-1
    fields:
      payer_id: IN1-3.1
      member_id: IN1-36.1
      subscriber.last_name: IN1-16.1
""")
        insurance = [IN1.format(n=2, payer="60054", name="Aetna", member="W2"),
                     IN1.format(n=1, payer="00621", name="BCBS", member="X1")]
        charge = m.apply(dft(ft1(1), insurance=insurance), channel="c").charges[0].charge
        assert [(c.payer_id, c.member_id) for c in charge.coverage] == [("00621", "X1"),
                                                                         ("60054", "W2")]
        assert charge.coverage[0].subscriber.last_name == "Rivera"

    def test_indexed_record_fields(self, tmp_path: Path) -> None:
        """`coverage[1].member_id` fills (and creates) the second coverage."""
        m = mapping(tmp_path, """\
fields:
  coverage[0].payer_id: IN1-3.1
  coverage[1].member_id: {value: SECONDARY-1}
""")
        charge = m.apply(dft(ft1(1)), channel="c").charges[0].charge
        assert [(c.payer_id, c.member_id) for c in charge.coverage] == [
            ("00621", None), (None, "SECONDARY-1")]

    def test_diagnoses_from_ft1_else_from_dg1_in_dg1_order(self, tmp_path: Path) -> None:
        """Diagnoses come from FT1-19, or from the DG1 segments ordered by DG1-1."""
        m = mapping(tmp_path, """\
fields:
  diagnoses:
    path: FT1-19[*].1
    else:
      each: DG1
      order_by: DG1-1
      fields: {code: DG1-3.1}
""")
        msg = dft(ft1(1, dx="J06.9"), ft1(2, dx=""), "DG1|2||I10", "DG1|1||E11.9")
        charges = [c.charge for c in m.apply(msg, channel="c").charges]
        assert [d.code for d in charges[0].diagnoses] == ["J06.9"]
        assert [d.code for d in charges[1].diagnoses] == ["E11.9", "I10"]
        assert charges[1].diagnoses[0].system == "ICD-10-CM"


class TestRulesAndFilters:
    def test_rule_actions(self, tmp_path: Path) -> None:
        """A rule's when: selects charges; set, add_modifier, hold, warn and drop act."""
        m = mapping(tmp_path, """\
fields:
  procedure.code: FT1-25.1
  units: {path: FT1-10, type: decimal}
  place_of_service: {path: FT1-16.1, default: "11"}
rules:
  - name: telehealth
    when: "charge.place_of_service in ('02', '10')"
    add_modifier: "95"
    set: {billing_provider.name: Virtual Clinic}
  - name: many_units
    when: "charge.units > 3"
    warn: "{{ charge.units }} units"
  - name: no_venipuncture_code
    when: "charge.procedure.code == '36415'"
    drop: "billed by the lab"
  - name: review_ecg
    when: "charge.procedure.code == '93000'"
    hold: "ECG needs review"
""")
        msg = dft(ft1(1, "99213", location="02", units="5"), ft1(2, "36415"), ft1(3, "93000"))
        result = m.apply(msg, channel="c")
        first, ecg = result.charges
        assert first.charge.procedure.modifiers == ["95"]
        assert first.charge.billing_provider.name == "Virtual Clinic"
        assert [(f.rule, f.severity, f.message) for f in first.findings] == [
            ("mapping.rule.many_units", "warn", "5 units")]
        assert [(f.rule, f.severity) for f in ecg.findings] == [("mapping.rule.review_ecg",
                                                                 "hold")]
        assert result.dropped == [("2", "rule no_venipuncture_code: billed by the lab")]

    def test_set_converts_to_the_field_type(self, tmp_path: Path) -> None:
        """A rule's set: value is converted like a mapped value (text date -> date)."""
        m = mapping(tmp_path, """\
fields:
  amount: {path: FT1-11.1, type: money}
rules:
  - name: fixed
    set: {service_date: "2024-01-02", amount: {expr: "charge.amount * 2"}}
""")
        charge = m.apply(dft(ft1(1)), channel="c").charges[0].charge
        assert (charge.service_date, charge.amount) == (date(2024, 1, 2), Decimal("290.00"))

    def test_charge_filter_drops_payments_with_a_reason(self, tmp_path: Path) -> None:
        """A path filter drops PY/AJ lines; lines_in still counts them."""
        m = mapping(tmp_path, """\
filters:
  - name: payments
    path: FT1-6
    in: [PY, AJ]
    reason: "FT1-6 {{ value }} is not a charge"
fields:
  procedure.code: FT1-25.1
""")
        result = m.apply(dft(ft1(1), ft1(2, kind="PY"), ft1(3, kind="AJ")), channel="c")
        assert len(result.charges) == 1 and result.lines_in == 3
        assert result.dropped == [("2", "payments: FT1-6 PY is not a charge"),
                                  ("3", "payments: FT1-6 AJ is not a charge")]

    def test_message_filter_drops_test_patients(self, tmp_path: Path) -> None:
        """A message filter drops the whole message and reports why."""
        m = mapping(tmp_path, """\
filters:
  - name: test_patient
    drop: message
    when: "hl7('PID-5.1') == 'TEST'"
    reason: test patient
fields:
  procedure.code: FT1-25.1
""")
        result = m.apply(dft(ft1(1), pid="PID|1||MRN9||TEST^Pat"), channel="c")
        assert result.filtered == "test_patient: test patient" and result.charges == []
        assert m.apply(dft(ft1(1)), channel="c").filtered is None

    def test_expression_error_holds_the_charge(self, tmp_path: Path) -> None:
        """An expression that fails on the data (None * 2) holds the charge, not the message."""
        m = mapping(tmp_path, "fields:\n  amount: {expr: \"charge.units * 2\"}\n")
        mapped = m.apply(dft(ft1(1)), channel="c").charges[0]
        assert mapped.charge.amount is None
        assert [f.rule for f in mapped.findings] == ["mapping.expression_error"]

    def test_expressions_cannot_reach_python_internals(self, tmp_path: Path) -> None:
        """The sandbox refuses dunder access: the rule errors into a finding, nothing runs."""
        m = mapping(tmp_path, """\
fields:
  procedure.code: FT1-25.1
rules:
  - name: escape
    when: "charge.__class__.__mro__[1].__subclasses__()"
    hold: escaped
""")
        mapped = m.apply(dft(ft1(1)), channel="c").charges[0]
        assert [f.rule for f in mapped.findings] == ["mapping.rule.escape"]
        assert "escaped" not in mapped.findings[0].message


class TestExtendsAndProvenance:
    def test_extends_overrides_fields_and_named_rules(self, tmp_path: Path) -> None:
        """A site mapping replaces the base's fields and same-named rules, keeps the rest."""
        write(tmp_path, "base.yaml", HEAD + """\
fields:
  procedure.code: FT1-25.1
  place_of_service: {value: "11"}
rules:
  - {name: tag, hold: base}
""")
        site = write(tmp_path, "site.yaml", """\
name: site
version: "7"
extends: base.yaml
fields:
  place_of_service: {value: "22"}
rules:
  - {name: tag, warn: site}
""")
        m = load_mapping(site)
        mapped = m.apply(dft(ft1(1)), channel="c").charges[0]
        assert (mapped.charge.procedure.code, mapped.charge.place_of_service) == ("99213", "22")
        assert [(f.severity, f.message) for f in mapped.findings] == [("warn", "site")]
        assert (m.name, m.version, m.input, m.iterate) == ("site", "7", "hl7", "FT1")
        assert len(m.files) == 2

    def test_source_records_mapping_and_line(self, tmp_path: Path) -> None:
        """Each charge records channel, control id, line, mapping name, version and hash."""
        m = mapping(tmp_path, "fields:\n  procedure.code: FT1-25.1\n", name="mine.yaml")
        charge = m.apply(dft(ft1(7), control="CTRL-9"), channel="clinic").charges[0].charge
        assert charge.source == {
            "channel": "clinic", "control_id": "CTRL-9", "mapping": "mine",
            "mapping_version": "1", "mapping_hash": m.file_hash, "line": 1, "line_id": "7"}
        assert charge.charge_id == make_charge_id("clinic", "CTRL-9", "7")

    def test_file_hash_follows_table_contents(self, tmp_path: Path) -> None:
        """Changing a table changes the mapping hash recorded on charges."""
        write(tmp_path, "t.csv", "k,v\nA,1\n")
        path = write(tmp_path, "m.yaml", HEAD + "tables:\n  t: {file: t.csv}\nfields: {}\n")
        before = load_mapping(path).file_hash
        write(tmp_path, "t.csv", "k,v\nA,2\n")
        assert load_mapping(path).file_hash != before

    def test_repeated_set_ids_give_distinct_charge_ids(self, tmp_path: Path) -> None:
        """Two FT1 with the same set id never share a charge id."""
        m = mapping(tmp_path, "fields:\n  procedure.code: FT1-25.1\n")
        ids = {c.charge.charge_id for c in m.apply(dft(ft1(1), ft1(1, "93000")),
                                                   channel="c").charges}
        assert len(ids) == 2

    def test_explain_names_the_source_of_each_field(self, tmp_path: Path) -> None:
        """explain=True says which path, lookup, default or rule produced each field."""
        write(tmp_path, "t.csv", "loc,pos\nNCFM,11\n")
        m = mapping(tmp_path, """\
tables:
  loc: {file: t.csv}
fields:
  procedure.code: FT1-25.1 | FT1-7.1
  place_of_service: {path: FT1-16.1 | PV1-3.1, lookup: loc.pos}
  units: {path: FT1-99, default: 1}
  amount: {path: FT1-11.1, type: money}
rules:
  - {name: double, set: {amount: {expr: "charge.amount * 2"}}}
""")
        msg = dft(ft1(1, "", ft1_7="G0439"))
        explain = m.apply(msg, channel="c", explain=True).charges[0].explain
        assert explain["procedure.code"] == "FT1-7.1"
        assert explain["place_of_service"] == "PV1-3.1 -> lookup loc.pos"
        assert explain["units"] == "default"
        assert explain["amount"] == "rule double"
        plain = m.apply(msg, channel="c")
        assert plain.charges[0].explain == {}


def test_mapped_charges_equal_validated_charges() -> None:
    """Charges built without re-validation equal the same data validated by pydantic."""
    m = load_mapping(Path(__file__).resolve().parents[2] / "mappings" / "dft_p03.yaml")
    for mapped in m.apply(dft(ft1(1, modifiers="25"), ft1(2, "93000", kind="CD")),
                          channel="c").charges:
        rebuilt = Charge.model_validate(mapped.charge.model_dump())
        assert rebuilt == mapped.charge
        assert rebuilt.to_json_dict() == mapped.charge.to_json_dict()


def test_message_without_lines_makes_no_charges(tmp_path: Path) -> None:
    """A message with nothing to iterate (an ADT on a DFT channel) yields no charges."""
    m = mapping(tmp_path, "fields:\n  patient.mrn: PID-3.1\n")
    result = m.apply(dft(), channel="c")
    assert (result.charges, result.dropped, result.filtered, result.lines_in) == ([], [], None, 0)
