"""What `chargebridge map`, `test` and `check` do, as functions returning (text, exit code).

- map_files: a dry run of a mapping (and the default scrub rules) over sample files.
- run_mapping_tests: mapping tests (mappings/tests/*.test.yaml): input files, expected
  charges (only the fields listed are compared) and expected findings.
- check_mapping_files: every problem in mappings and their tables, `file:line:col: ...`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.charge import Finding
from engine.config.yaml_positions import load_positioned
from engine.errors import ChargeBridgeError, ConfigError
from engine.mapping.loader import load_mapping, validation_problems
from engine.mapping.mapping import CompiledMapping, MappingResult
from engine.scrub import Scrubber, ScrubSettings

__all__ = ["check_mapping_files", "map_files", "read_inputs", "run_mapping_tests"]

EXIT_OK, EXIT_FAIL = 0, 1


# -- reading sample files -------------------------------------------------------------

def _fhir_contexts(data: Any) -> list[dict[str, Any]]:
    """A file's FHIR mapping contexts: a context dict as is; a Bundle or a lone resource is
    grouped by resource type (references are not resolved in a dry run)."""
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        resources: list[dict[str, Any]] = [
            e["resource"] for e in data.get("entry") or []
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    elif isinstance(data, dict) and "resourceType" in data:
        resources = [data]
    elif isinstance(data, dict):
        return [data]
    elif isinstance(data, list):
        return [c for item in data for c in _fhir_contexts(item)]
    else:
        raise ValueError("expected a FHIR resource, a Bundle or a mapping context object")
    grouped: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        grouped.setdefault(str(resource.get("resourceType")), []).append(resource)
    context: dict[str, Any] = {}
    for kind, items in grouped.items():
        context[kind] = items if kind in ("Coverage", "ChargeItem") or len(items) > 1 \
            else items[0]
    return [context]


def read_inputs(mapping: CompiledMapping, path: Path) -> list[Any]:
    """The messages (HL7) or contexts (FHIR) in one file; raises ChargeBridgeError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ChargeBridgeError(f"{path}: cannot read ({exc.strerror})") from None
    if mapping.input == "fhir":
        try:
            return _fhir_contexts(json.loads(data))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ChargeBridgeError(f"{path}: not FHIR JSON ({exc})") from None
    from engine.hl7.mllp import split_file_messages
    from engine.hl7.reader import parse

    raws = split_file_messages(data)
    if not raws:
        raise ChargeBridgeError(f"{path}: no HL7 message found (a message starts with MSH)")
    return [parse(raw) for raw in raws]


@dataclass
class _Run:
    """One input file mapped: results per message, plus scrub findings."""

    file: Path
    results: list[MappingResult] = field(default_factory=list)
    findings: dict[str, list[Finding]] = field(default_factory=dict)


def _map_file(mapping: CompiledMapping, path: Path, scrubber: Scrubber | None, channel: str,
              explain: bool) -> _Run:
    run = _Run(path)
    for msg in read_inputs(mapping, path):
        result = mapping.apply(msg, channel=channel, explain=explain)
        run.results.append(result)
        for mapped in result.charges:
            run.findings[mapped.charge.charge_id] = list(mapped.findings)
        if scrubber is not None:
            scrubbed = scrubber.scrub([m.charge for m in result.charges])
            for charge_id, found in scrubbed.items():
                run.findings[charge_id] += found
    return run


# -- map ------------------------------------------------------------------------------

def _cell(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[:width - 1] + "~"


_COLUMNS = (("line", 4), ("type", 6), ("date", 10), ("code", 7), ("mods", 11), ("units", 5),
            ("amount", 9), ("dx", 16), ("pos", 3), ("npi", 10), ("payer", 8), ("mrn", 12))


def _table(runs: list[_Run], explain: bool) -> str:
    out: list[str] = []
    header = "  ".join(name.ljust(width) for name, width in _COLUMNS)
    for run in runs:
        out.append(f"== {run.file}")
        for result in run.results:
            if result.filtered:
                out.append(f"   message filtered: {result.filtered}")
                continue
            out.append("   " + header)
            for mapped in result.charges:
                c = mapped.charge
                row = (c.source.get("line_id"), c.transaction_type, c.service_date,
                       c.procedure.code, " ".join(c.procedure.modifiers), c.units, c.amount,
                       " ".join(d.code for d in c.diagnoses), c.place_of_service,
                       c.rendering_provider.npi, c.coverage[0].payer_id if c.coverage else None,
                       c.patient.mrn)
                out.append("   " + "  ".join(_cell(v, w).ljust(w)
                                             for v, (_, w) in zip(row, _COLUMNS, strict=True)))
                for finding in run.findings.get(c.charge_id, []):
                    out.append(f"      {finding.severity.upper()} {finding.rule}"
                               f"{f' [{finding.field}]' if finding.field else ''}: "
                               f"{finding.message}")
                if explain:
                    for name, how in mapped.explain.items():
                        out.append(f"      {name:<30} <- {how}")
            for line_id, reason in result.dropped:
                out.append(f"   line {line_id} dropped: {reason}")
            out.append(f"   {result.lines_in} line(s) in, {len(result.charges)} charge(s), "
                       f"{len(result.dropped)} dropped")
    return "\n".join(out)


def _json(runs: list[_Run], explain: bool) -> str:
    charges: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    explained: list[dict[str, Any]] = []
    for run in runs:
        for result in run.results:
            if result.filtered:
                dropped.append({"file": str(run.file), "line_id": None,
                                "reason": result.filtered})
            for mapped in result.charges:
                charges.append(mapped.charge.to_json_dict())
                for finding in run.findings.get(mapped.charge.charge_id, []):
                    findings.append({"charge_id": mapped.charge.charge_id,
                                     **finding.model_dump(mode="json")})
                if explain:
                    explained.append({"charge_id": mapped.charge.charge_id,
                                      "fields": mapped.explain})
            dropped += [{"file": str(run.file), "line_id": line_id, "reason": reason}
                        for line_id, reason in result.dropped]
    doc: dict[str, Any] = {"charges": charges, "findings": findings, "dropped": dropped}
    if explain:
        doc["explain"] = explained
    return json.dumps(doc, indent=2)


def map_files(mapping_path: str | Path, files: Sequence[str | Path], fmt: str = "table",
              explain: bool = False, *, scrub: ScrubSettings | None = None,
              channel: str = "dry-run") -> tuple[str, int]:
    """Dry-run a mapping on sample files: charges, findings (mapping + scrub), dropped lines.

    Exit code 1 when the mapping does not load or a file cannot be read or mapped;
    findings are not failures (they are what the dry run is for).
    """
    if fmt not in ("table", "json"):
        return f"unknown format {fmt!r} (use table or json)", EXIT_FAIL
    try:
        mapping = load_mapping(mapping_path)
    except ConfigError as exc:
        return "\n".join(exc.problems), EXIT_FAIL
    scrubber = Scrubber(scrub or ScrubSettings())
    runs: list[_Run] = []
    errors: list[str] = []
    for name in files:
        try:
            runs.append(_map_file(mapping, Path(name), scrubber, channel, explain))
        except ChargeBridgeError as exc:
            errors.append(f"{name}: {exc}")
    text = _json(runs, explain) if fmt == "json" else _table(runs, explain)
    if errors:
        text = "\n".join([text, *errors]) if text else "\n".join(errors)
    return text, EXIT_FAIL if errors else EXIT_OK


# -- mapping tests --------------------------------------------------------------------

class _ExpectedFinding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    charge: int | None = Field(None, ge=1, description="1-based charge number.")
    rule: str
    field: str | None = None
    severity: str | None = None
    message: str | None = Field(None, description="A part of the message.")


class _ExpectedDrop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: str | int | None = None
    reason: str | None = Field(None, description="A part of the reason.")


class _Expect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    charges: list[dict[str, Any]] | None = None
    findings: list[_ExpectedFinding] | None = None
    dropped: list[_ExpectedDrop] | None = None
    filtered: str | None = None


class _Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    input: str | list[str]
    expect: _Expect


class _TestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mapping: str
    channel: str = "test"
    scrub: bool | dict[str, Any] = Field(
        True, description="Add scrub findings: true (default rules), false, or settings.")
    tests: list[_Case]


def _lookup(doc: Any, dotted: str) -> Any:
    """`coverage[1].payer_id` inside a charge's JSON dict; a KeyError names what is missing."""
    value = doc
    for part in dotted.split("."):
        name, _, rest = part.partition("[")
        if name:
            if not isinstance(value, dict) or name not in value:
                raise KeyError(f"no field {name!r}")
            value = value[name]
        while rest:
            index_text, _, rest = rest.partition("]")
            rest = rest.lstrip("[")
            if not isinstance(value, list):
                raise KeyError(f"{name} is not a list")
            index = int(index_text)
            if index >= len(value):
                return None
            value = value[index]
    return value


def _same(expected: Any, actual: Any) -> bool:
    if expected is None or actual is None:
        return expected is actual
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(
            _same(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return all(k in actual and _same(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        try:
            return Decimal(str(expected)) == Decimal(str(actual))
        except InvalidOperation:
            return False
    return str(expected) == str(actual)


def _finding_matches(expected: _ExpectedFinding, number: int, finding: Finding) -> bool:
    return ((expected.charge is None or expected.charge == number)
            and expected.rule == finding.rule
            and (expected.field is None or expected.field == finding.field)
            and (expected.severity is None or expected.severity == finding.severity)
            and (expected.message is None or expected.message in finding.message))


def _check_case(case: _Case, runs: list[_Run]) -> list[str]:
    """Differences between what the case expects and what the mapping produced."""
    diffs: list[str] = []
    charges = [m for run in runs for r in run.results for m in r.charges]
    dropped = [d for run in runs for r in run.results for d in r.dropped]
    filtered = [r.filtered for run in runs for r in run.results if r.filtered]
    findings = {cid: f for run in runs for cid, f in run.findings.items()}
    expect = case.expect
    if expect.charges is not None:
        if len(expect.charges) != len(charges):
            diffs.append(f"- {len(expect.charges)} charge(s) expected\n"
                         f"+ {len(charges)} charge(s) mapped")
        for number, (wanted, mapped) in enumerate(
                zip(expect.charges, charges, strict=False), 1):
            actual = mapped.charge.to_json_dict()
            for dotted, value in wanted.items():
                try:
                    got = _lookup(actual, dotted)
                except KeyError as exc:
                    diffs.append(f"  charge {number} {dotted}: {exc.args[0]}")
                    continue
                if not _same(value, got):
                    diffs.append(f"  charge {number} {dotted}:\n"
                                 f"-   {json.dumps(value, default=str)}\n"
                                 f"+   {json.dumps(got, default=str)}")
    if expect.findings is not None:
        actual_findings = [(n, f) for n, m in enumerate(charges, 1)
                           for f in findings.get(m.charge.charge_id, [])]
        matched: set[int] = set()
        for wanted_finding in expect.findings:
            hit = next((i for i, (n, f) in enumerate(actual_findings)
                        if i not in matched and _finding_matches(wanted_finding, n, f)), None)
            if hit is None:
                diffs.append(f"- finding {wanted_finding.model_dump(exclude_none=True)}")
            else:
                matched.add(hit)
        for i, (n, f) in enumerate(actual_findings):
            if i not in matched:
                diffs.append(f"+ finding charge {n}: {f.rule} [{f.field}] {f.severity}: "
                             f"{f.message}")
    if expect.dropped is not None:
        unmatched = list(dropped)
        for drop in expect.dropped:
            found = next((d for d in unmatched
                          if (drop.line is None or str(drop.line) == d[0])
                          and (drop.reason is None or drop.reason in d[1])), None)
            if found is None:
                diffs.append(f"- dropped {drop.model_dump(exclude_none=True)}")
            else:
                unmatched.remove(found)
        diffs += [f"+ dropped line {line}: {reason}" for line, reason in unmatched]
    if expect.filtered is not None:
        if not any(expect.filtered in reason for reason in filtered):
            diffs.append(f"- message filtered: ...{expect.filtered}...\n"
                         f"+ {'filtered: ' + '; '.join(filtered) if filtered else 'not filtered'}")
    elif filtered and expect.charges is not None:
        diffs.append(f"+ message filtered: {'; '.join(filtered)}")
    return diffs


def _run_test_file(path: Path) -> tuple[list[str], int, int]:
    """(report lines, passed, failed) for one test file."""
    try:
        doc = load_positioned(path, substitute_env=False)
        spec = _TestFile.model_validate(doc.data)
    except ConfigError as exc:
        return [f"ERROR {path}", *[f"  {p}" for p in exc.problems]], 0, 1
    except ValidationError as exc:
        return [f"ERROR {path}", *[f"  {p}" for p in validation_problems(doc, exc)]], 0, 1
    base = path.parent
    try:
        mapping = load_mapping(base / spec.mapping)
    except ConfigError as exc:
        return [f"ERROR {path}: mapping {spec.mapping} does not load",
                *[f"  {p}" for p in exc.problems]], 0, 1
    scrubber: Scrubber | None = None
    if spec.scrub is not False:
        try:
            settings = ScrubSettings.model_validate(spec.scrub if isinstance(spec.scrub, dict)
                                                    else {})
        except ValidationError as exc:
            return [f"ERROR {path}: scrub settings: {exc}"], 0, 1
        scrubber = Scrubber(settings)
    lines: list[str] = []
    passed = failed = 0
    for case in spec.tests:
        inputs = [case.input] if isinstance(case.input, str) else case.input
        try:
            runs = [_map_file(mapping, base / name, scrubber, spec.channel, False)
                    for name in inputs]
        except ChargeBridgeError as exc:
            lines.append(f"FAIL {path}: {case.name}\n  {exc}")
            failed += 1
            continue
        diffs = _check_case(case, runs)
        if diffs:
            failed += 1
            lines.append(f"FAIL {path}: {case.name}")
            lines += ["  " + d.replace("\n", "\n  ") for d in diffs]
        else:
            passed += 1
            lines.append(f"ok   {path}: {case.name}")
    return lines, passed, failed


def run_mapping_tests(paths: Sequence[str | Path]) -> tuple[str, int]:
    """Run mapping test files; exit code 1 when any test fails or none was found."""
    if not paths:
        return "no mapping tests found (looked for mappings/**/*.test.yaml)", EXIT_FAIL
    lines: list[str] = []
    passed = failed = 0
    for name in paths:
        more, ok, bad = _run_test_file(Path(name))
        lines += more
        passed += ok
        failed += bad
    lines.append(f"{passed} passed, {failed} failed")
    return "\n".join(lines), EXIT_FAIL if failed else EXIT_OK


# -- check ----------------------------------------------------------------------------

def check_mapping_files(paths: Sequence[str | Path]) -> list[str]:
    """Every problem in the given mappings (and their bases and tables); [] when all load."""
    problems: list[str] = []
    for name in paths:
        try:
            load_mapping(name)
        except ConfigError as exc:
            problems += exc.problems
    return problems
