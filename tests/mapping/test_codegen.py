"""The generated fast path (engine.mapping.codegen) against the reference closures.

For the shipped HL7 mappings every message of a varied corpus must map to exactly the same
MappingResult both ways: charges' JSON, findings, dropped lines, filter and line count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.messages import make_dft
from engine.errors import HL7ReadError, MappingError
from engine.hl7.reader import Message, parse
from engine.mapping import CompiledMapping, MappingResult, load_mapping
from tests.mapping.helpers import IN1, MAPPINGS, MSH, PID, PV1, SAMPLES, dft, ft1, write

NAMES = ("dft_p03", "site_cpt", "site_chargemaster")
CORPUS = Path("/work/shared/corpus/hl7v2")


@pytest.fixture(scope="module")
def mappings() -> dict[str, CompiledMapping]:
    return {name: load_mapping(MAPPINGS / f"{name}.yaml") for name in NAMES}


def _summary(result: MappingResult) -> Any:
    return (
        [(c.charge.to_json_dict(), [f.model_dump() for f in c.findings]) for c in result.charges],
        result.dropped, result.filtered, result.lines_in,
    )


def _outcome(apply: Any, raw: str | bytes) -> Any:
    """What mapping `raw` gives: the result, or the MappingError message."""
    try:
        return _summary(apply(parse(raw), channel="clinic"))
    except MappingError as exc:
        return ("error", str(exc))


def _assert_same(mapping: CompiledMapping, raw: str | bytes) -> None:
    fast = _outcome(mapping.apply, raw)
    reference = _outcome(mapping.apply_reference, raw)
    assert fast == reference


def _text(msg: Message) -> str:
    return msg.raw


def _varied() -> list[str]:
    """Hand-made DFTs covering the data problems a mapping turns into findings or drops."""
    cm = "99213^^C4"
    messages = [
        dft(ft1(1), ft1(2, "99214", modifiers="25~59")),
        dft(ft1(1, date="2024031"), ft1(2, date="20241399"), ft1(3, date="")),
        dft(ft1(1, units="two"), ft1(2, units=""), ft1(3, units="1.5"), ft1(4, units="1,000")),
        dft(ft1(1, amount="abc"), ft1(2, amount=""), ft1(3, amount="$12.345")),
        dft(ft1(1, code="", ft1_7="NOTINCDM^x^C4"), ft1(2, code="", ft1_7="")),
        dft(ft1(1, kind="CD", amount="50.00"), ft1(2, kind="CR"), ft1(3, kind="ZZ")),
        dft(ft1(1, kind="PY"), ft1(2, kind="AJ"), ft1(3)),
        dft(ft1(1, dx=""), "DG1|2||I10^Hypertension^I10", "DG1|1||E11.9^^ICD10", ft1(2, dx="")),
        dft(ft1(1), ft1(1), ft1("")),
        dft(ft1(1, code=r"99\T\13", location="NCFM&sub^x"), ft1(2, dx='""~E11.9')),
        dft(ft1(1, location="UNKNOWNLOC"), ft1(2, location="NCFM")),
        dft(ft1(1, ft1_7=cm, code="")),
        dft(ft1(1), pid="PID|1||^^^CLINIC^MR||^||badbirth|X", pv1="PV1|1"),
        dft(ft1(1), insurance=[]),
        dft(ft1(1), insurance=[IN1.format(n=2, payer="", name="Aetna", member="M2"),
                               IN1.format(n=1, payer="00621", name="Blue Cross", member="")]),
        dft("PR1|1||99999^x", ft1(1)),
        dft(ft1(1), "PR1|1||99999^x", "NTE|1||note", ft1(2), "PV1|2|I"),
        dft(ft1(1, units="two", amount=""), ft1(2, units="3", amount=""),
            ft1(3, units="", amount="", ft1_7="NOTINCDM")),
    ]
    texts = [_text(m) for m in messages]
    # MSH values with a sub-component or an escape (MSH-2 holds both delimiters anyway).
    texts.append(_text(dft(ft1(1), control=r"C\T\1&2")).replace("DFT^P03^", r"DFT&X^P\T\3^"))
    texts += [make_dft(i, lines=lines).decode() for i, lines in ((1, 3), (7, 1), (12, 5))]
    texts.append("\r".join([MSH.format(control="NOFT1"), PID, PV1]) + "\r")
    # Fewer encoding characters: the generated code hands these to the reference path.
    texts.append("\r".join([MSH.format(control="ENC").replace("^~\\&", "^~"), PID, PV1,
                            ft1(1).replace("&", "")]) + "\r")
    return texts


def _files() -> list[Path]:
    found = sorted(SAMPLES.glob("*.hl7")) + sorted((MAPPINGS / "tests" / "messages").glob("*.hl7"))
    if CORPUS.is_dir():
        found += sorted(p for p in CORPUS.iterdir() if p.is_file())
    return found


@pytest.mark.parametrize("name", NAMES)
def test_shipped_mappings_have_a_fast_path(mappings: dict[str, CompiledMapping],
                                           name: str) -> None:
    """Every shipped HL7 mapping is compiled into a generated function."""
    assert mappings[name].fast is not None


@pytest.mark.parametrize("name", NAMES)
def test_varied_messages_map_the_same_both_ways(mappings: dict[str, CompiledMapping],
                                                name: str) -> None:
    """Hand-made DFTs with bad and missing data map identically on both paths."""
    for raw in _varied():
        _assert_same(mappings[name], raw)


@pytest.mark.parametrize("name", NAMES)
def test_sample_files_map_the_same_both_ways(mappings: dict[str, CompiledMapping],
                                             name: str) -> None:
    """Sample and corpus files map identically on both paths."""
    for path in _files():
        try:
            parse(path.read_bytes())
        except HL7ReadError:
            continue
        _assert_same(mappings[name], path.read_bytes())


_VALUE = st.text(alphabet="AB19.-$ ^&~\\\"", max_size=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_ft1_values_map_the_same_both_ways(mappings: dict[str, CompiledMapping],
                                                  data: st.DataObject) -> None:
    """FT1 fields of random text (delimiters, escapes, nulls included) agree on both paths."""
    segments = []
    for set_id in range(1, data.draw(st.integers(1, 3)) + 1):
        fields = ["FT1", str(set_id), *[data.draw(_VALUE) for _ in range(26)]]
        fields[6] = data.draw(st.sampled_from(["CG", "CD", "PY", "", fields[6]]))
        fields[7] = data.draw(st.sampled_from(["99213^x^C4", "CDM100^^", "", fields[7]]))
        segments.append("|".join(fields))
        if data.draw(st.booleans()):
            segments.append(f"DG1|{set_id}||{data.draw(_VALUE)}")
    raw = "\r".join([MSH.format(control="HYP"), PID, PV1, *segments,
                     IN1.format(n=1, payer=data.draw(_VALUE), name="Plan", member="M")]) + "\r"
    for name in NAMES:
        _assert_same(mappings[name], raw)


_TYPED = st.sampled_from([
    "20240315", "20240230", "20241301", " 20240315", "2024031", "2024-03-15", "202403151430",
    "0", "1", "12.5", " 7 ", "1,000", "$12.345", "$ 3", "-4.00", "1e3", "1e999999", "NaN",
    "Infinity", "-inf", "1_000", "\u0663", "\u00b2", "abc", "", '""', "1^2", "3&4", "5~6",
])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_typed_ft1_values_map_the_same_both_ways(mappings: dict[str, CompiledMapping],
                                                 data: st.DataObject) -> None:
    """Dates, units, amounts, set ids and repeated fields of odd shapes agree on both paths."""
    segments = []
    for set_id in range(1, data.draw(st.integers(1, 3)) + 1):
        segment = ft1(set_id, date=data.draw(_TYPED), units=data.draw(_TYPED),
                      amount=data.draw(_TYPED), kind=data.draw(st.sampled_from(["CG", "CD"])),
                      modifiers=data.draw(st.sampled_from(["", "25~59", "25&x~\\T\\", '""~26',
                                                           "^25~59^x"])),
                      dx=data.draw(st.sampled_from(["E11.9~I10", "", '""~I10', "E11&1~^x~I10",
                                                    "A\\S\\B"])))
        fields = segment.split("|")
        fields[1] = data.draw(st.sampled_from([str(set_id), "", "1", '""', "2^x", "3&y", "4~5"]))
        fields[12] = data.draw(_TYPED)
        segments.append("|".join(fields))
    raw = "\r".join([MSH.format(control="TYPED"), PID, PV1, *segments,
                     IN1.format(n=1, payer="00621", name="Plan", member="M")]) + "\r"
    for name in NAMES:
        _assert_same(mappings[name], raw)


def test_failing_lookup_fails_both_ways(tmp_path: Path) -> None:
    """A `missing: fail` lookup raises the same MappingError on the fast path."""
    write(tmp_path, "tables/codes.csv", "code,cpt\nA1,99213\n")
    path = write(tmp_path, "m.yaml", """
        version: 1
        input: hl7
        iterate: FT1
        tables:
          codes: {file: tables/codes.csv}
        fields:
          procedure.code: {path: FT1-7.1, lookup: {table: codes, missing: fail}}
          units: {path: FT1-10, type: integer, default: 1}
          coverage[1].member_id: IN1-36.1
          diagnoses: {path: "FT1-19[*].1", normalize: [{split: "."}]}
        """)
    mapping = load_mapping(path)
    assert mapping.fast is not None
    _assert_same(mapping, _text(dft(ft1(1, ft1_7="A1"), ft1(2, units="x"))))
    outcome = _outcome(mapping.apply, _text(dft(ft1(1, ft1_7="B2"))))
    assert outcome[0] == "error"
    assert outcome == _outcome(mapping.apply_reference, _text(dft(ft1(1, ft1_7="B2"))))


def test_rule_conditions_written_inline_agree_both_ways(tmp_path: Path) -> None:
    """Rule `when:` tests the generator writes inline (and those it leaves to the closures,
    or that raise) give the same sets, holds, warnings and drops as the reference."""
    path = write(tmp_path, "m.yaml", """
        version: 1
        input: hl7
        iterate: FT1
        vars:
          raw_units: FT1-10
        fields:
          transaction_type: {path: FT1-6, default: CG}
          procedure.code: FT1-7.1
          procedure.modifiers: "FT1-26[*].1"
          units: {path: FT1-10, type: decimal, default: 1}
          amount: {path: FT1-11.1, type: money}
          diagnoses: "FT1-19[*].1"
        rules:
          - name: chained
            when: "0 < charge.units <= 2 and not charge.procedure.code is none"
            warn: "few units"
          - name: arithmetic
            when: "(charge.amount * 2 if charge.amount else 0) - 1 > 100 or raw_units == '3'"
            set:
              amount: {expr: "-charge.amount"}
          - name: nested_and_items
            when: "charge.procedure.code == '99214' and charge.diagnoses[0] != 'X'"
            add_modifier: ["59"]
          - name: membership_left_to_the_closures
            when: "charge.procedure.code in ['99215', '99216']"
            hold: "needs review"
          - name: raises
            when: "charge.amount > 'text'"
            warn: "never"
          - name: drop_zero
            when: "charge.amount == 0 or (charge.units % 7) == 0"
            drop: "zero amount"
        """)
    mapping = load_mapping(path)
    assert mapping.fast is not None
    assert "M._rule(" in mapping.fast.source  # type: ignore[attr-defined]
    for amount in ("145.00", "10", "0", "", "-60"):
        for code, units in (("99213", "1"), ("99214", "3"), ("99215", "7"), ("", "2")):
            raw = _text(dft(ft1(1, code, amount=amount, units=units, modifiers="25"),
                            ft1(2, code, amount=amount, units="", dx="")))
            _assert_same(mapping, raw)


def test_filters_and_single_values_as_lists_agree_both_ways(tmp_path: Path) -> None:
    """A path filter with alternatives, read inline, and a list field read from a path
    without `[*]` give the same drops and values as the reference."""
    path = write(tmp_path, "m.yaml", """
        version: 1
        input: hl7
        iterate: FT1
        filters:
          - name: no_kind
            path: FT1-6 | FT1-7.1
            in: [PY, X&Y]
            reason: "kind {{ value }}"
          - name: second
            path: FT1-7.2
            equals: drop
            reason: "second component says drop"
        fields:
          procedure.code: FT1-7.1
          procedure.modifiers: {path: FT1-26.2, normalize: [trim, upper]}
          diagnoses: FT1-19.1 | FT1-7.1
        """)
    mapping = load_mapping(path)
    assert mapping.fast is not None
    for kind in ("PY", "CG", "", "X&Y", r"P\T\Y"):
        for ft1_7 in ("99213^drop", "PY^keep", r"A\S\B^x", "", "^^"):
            raw = _text(dft(ft1(1, kind=kind, ft1_7=ft1_7, modifiers="x^ab~c^d", dx=""),
                            ft1(2, kind="PY", modifiers="^&s", dx="E11.9~I10")))
            _assert_same(mapping, raw)


_NAMESPACE_MAPPING = """
    version: 1
    input: hl7
    iterate: FT1
    filters:
      - name: payment
        path: FT1-6
        not_in: [CG, CD, ""]
        reason: "line {{ line }} of {{ control_id }} ({{ message_type }}) is {{ value }}"
      - name: no_code
        path: FT1-7.1
        exists: false
        reason: "no code"
      - name: zero
        path: FT1-11.1
        equals: "0.00"
        reason: "zero {{ value }}"
      - name: test_code
        path: FT1-7.2
        matches: "^TEST"
        reason: "test {{ value }}"
      - name: late
        when: "charge.amount is not none and charge.amount > 1000 and mrn != 'X'"
        reason: "{{ charge.procedure.code }} over 1000 for {{ mrn }} with {{ price }}"
    vars:
      mrn: PID-3.1
      price: {path: FT1-12.1, type: money}
      doubled: {expr: "price * 2 if price is not none else none"}
    fields:
      procedure.code: FT1-7.1
      units: {path: FT1-10, type: decimal, default: 1}
      amount:
        path: FT1-11.1
        type: money
        else: {expr: "(doubled if doubled is not none else price) * charge.units"}
      place_of_service: {expr: "'11' if message_type == 'DFT^P03' and line > 1 else mrn"}
      prior_authorization: {expr: "nothing_named_so"}
      encounter.id: {expr: "charge.no_such_field or control_id"}
    rules:
      - name: note
        when: "charge.units > 1 and charge.no_such_field is none"
        warn: "{{ line }}: {{ charge.units }} units of {{ price }} for {{ mrn }}"
      - name: credit
        when: "charge.amount is not none and charge.amount < 0"
        set:
          transaction_type: credit
      - name: jinja_when
        when: "charge.procedure.code | lower == '99214'"
        hold: "{{ doubled }}"
    """


def test_namespace_made_only_where_read_agrees_both_ways(tmp_path: Path) -> None:
    """Vars, message values, expressions the generator writes inline (one raising), filter
    reasons and rules reading the namespace give the same results as the reference, which
    makes the namespace for every line."""
    mapping = load_mapping(write(tmp_path, "m.yaml", _NAMESPACE_MAPPING))
    assert mapping.fast is not None
    source = mapping.fast.source  # type: ignore[attr-defined]
    assert " ns = {" not in source and "_expression_failed(" in source
    for kind in ("CG", "PY", ""):
        for amount, price, units in (("", "10.00", "2"), ("", "", "3"), ("", "x", "1"),
                                     ("0.00", "", "1"), ("2000", "", "1"), ("-5", "", "2"),
                                     ("", "600", "1"), ("", "5", "two")):
            for ft1_7 in ("99213^x", "99214^TEST", "", "^x"):
                lines = [ft1(1, kind=kind, amount=amount, units=units, ft1_7=ft1_7),
                         ft1(2, amount=amount, units=units)]
                raw = _text(dft(*(_unit_price(seg, price) for seg in lines)))
                _assert_same(mapping, raw)
                _assert_same(mapping, raw.replace("DFT^P03^", "DFT&X^^"))


def _unit_price(segment: str, price: str) -> str:
    fields = segment.split("|")
    fields[12] = price
    return "|".join(fields)


def test_expression_left_to_jinja_keeps_a_namespace_per_line(tmp_path: Path) -> None:
    """An expression only Jinja evaluates reads the namespace from a closure: the generated
    code then makes it for every line, and still agrees with the reference."""
    text = _NAMESPACE_MAPPING.replace(
        'place_of_service: {expr: "',
        'encounter.location: {expr: "mrn | lower"}\n      place_of_service: {expr: "')
    mapping = load_mapping(write(tmp_path, "m.yaml", text))
    assert mapping.fast is not None
    assert " ns = {" in mapping.fast.source  # type: ignore[attr-defined]
    for amount in ("", "2000", "-5", "1"):
        for ft1_7 in ("99213^x", "99214^TEST", ""):
            raw = _text(dft(ft1(1, amount=amount, units="2", ft1_7=ft1_7), ft1(2, kind="PY")))
            _assert_same(mapping, raw)


def test_records_read_through_their_scope_agree_both_ways(tmp_path: Path) -> None:
    """Record fields the generator reads through the record's scope (`[*]`, a segment
    index), fall back to another segment, or are ordered, agree with the reference, on
    message-level and line-level records."""
    path = write(tmp_path, "m.yaml", """
        version: 1
        input: hl7
        iterate: FT1
        fields:
          procedure.code: FT1-7.1
          coverage:
            each: IN1
            order_by: IN1-1
            fields:
              payer_id: "IN1[1]-3.1"
              payer_name: "IN1-4[*].1"
              member_id: IN1-36.1 | PID-3.1
              subscriber.last_name: IN1-16.1 | PID-5.1
              relationship: IN1-17.1.2 | IN1-17.2
          diagnoses:
            each: DG1
            order_by: DG1-1
            fields:
              code: "DG1-3[*].1 | FT1-19.1"
              system: DG1[1]-3.3 | PV1-2
          procedure.description: "FT1-7.2.2 | FT1-26[*].1.2 | FT1-7.2"
          procedure.modifiers: "FT1-26[*].1.2"
        """)
    mapping = load_mapping(path)
    assert mapping.fast is not None
    in1 = [IN1.format(n=2, payer="", name="Aetna~Other", member="").replace("SEL^", "SEL&18^"),
           IN1.format(n=1, payer="00621", name="", member="M1"),
           IN1.format(n="x", payer="P3", name="Third", member="")]
    for insurance in (in1, in1[:1], []):
        raw = _text(dft(ft1(1, ft1_7="A^B&C"), "DG1|2||I10^x^I10~E11.9", "DG1|1||",
                        ft1(2, modifiers="1&2~3~&5", ft1_7="A^\\T\\"), ft1(3, dx=""),
                        "DG1|1||Z00.0^^I10", insurance=insurance))
        _assert_same(mapping, raw)


# A list cell looked up for a scalar field with an `else:` stays a list (both ways).
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_lookup_cells_of_every_kind_agree_both_ways(tmp_path: Path) -> None:
    """Lookups whose cells are numbers, lists, empty or missing, every missing-key policy,
    and steps that may not leave text, on scalar and list fields with and without
    fallbacks: the checks the generator leaves out are those that cannot fail."""
    path = write(tmp_path, "m.yaml", """
        version: 1
        input: hl7
        iterate: FT1
        tables:
          mixed:
            rows:
              A: {num: 7, cell: [x, "", 3], text: "", pos: "11"}
              B: {num: "", cell: "25 59", text: "b", pos: 11}
              C: {num: "2.5", cell: "", text: " c "}
              D: {cell: [], num: abc}
        fields:
          units:
            path: FT1-10
            normalize: [trim, upper]
            lookup: {table: mixed, column: num, missing: keep}
            type: decimal
            default: 1
          amount:
            path: FT1-11.1
            normalize: [strip_leading_zeros]
            lookup: {table: mixed, column: num, missing: default, default: "3.50"}
            type: money
            else: {path: FT1-12.1, type: money}
          procedure.modifiers:
            path: FT1-26[*].1
            normalize: [trim, upper]
            lookup: {table: mixed, column: cell, missing: keep}
            else:
              path: FT1-7.1
              lookup: {table: mixed, column: cell, missing: hold}
          procedure.code:
            path: FT1-7.1
            lookup: {table: mixed, column: cell, missing: default}
            type: code
            else: FT1-7.2
          procedure.description:
            path: FT1-7.2
            normalize: [trim]
            lookup: {table: mixed, column: text, missing: keep}
            type: code
            else: {value: fallback}
          place_of_service:
            path: FT1-16.1
            normalize: [{pad: 3}]
            lookup: {table: mixed, column: pos, missing: hold}
            default: "99"
          service_date: {path: FT1-4.1 | FT1-4.2, type: date, else: {value: "2024-01-01"}}
          diagnoses:
            path: FT1-19[*].1
            normalize: [{split: "."}]
            else: {value: [Z00.0]}
        """)
    mapping = load_mapping(path)
    assert mapping.fast is not None
    keys = ["A", "B", "C", "D", "E", " b ", "", "0A", "00"]
    for i, key in enumerate(keys):
        other = keys[(i + 3) % len(keys)]
        segment = ft1(1, ft1_7=f"{key}^{other}", units=key, amount=key, location=other,
                      modifiers=f"{key}~{other}", dx=f"{key}.1~" if i % 2 else "",
                      date="" if i % 3 else "20240230")
        raw = _text(dft(_unit_price(segment, other), ft1(2, ft1_7=other, location=key)))
        _assert_same(mapping, raw)
