"""A compiled mapping and what applying it to one message yields.

`CompiledMapping.apply` runs the closures built at load: message filters, values read once
per message (PID, PV1, IN1 ...), then per FT1 group (or ChargeItem) the line's own values,
charge filters, rules, and the Charge. Bad data never raises: it becomes a hold finding on
the charge. Only a lookup with `missing: fail` raises MappingError, failing the message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.charge import Charge, Finding, make_charge_id
from engine.errors import MappingError
from engine.mapping.accessors import LineSource
from engine.mapping.compiler import STOP, CompiledFilter, CompiledRule, FieldParts, Line

__all__ = ["CompiledMapping", "FieldPlan", "MappedCharge", "MappingResult"]

_TRANSACTION_TYPES = ("charge", "credit")


@dataclass
class MappedCharge:
    """One charge, the mapping findings about it, and (with explain) where each value came from."""

    charge: Charge
    findings: list[Finding]
    explain: dict[str, str] = field(default_factory=dict)


@dataclass
class MappingResult:
    """What one message became: charges, lines dropped with reasons, or a whole-message filter.

    `dropped` holds (line id, reason); line id is the FT1 set id (or the line's index).
    `lines_in` counts FT1 groups (ChargeItems) read, for reconciliation:
    lines_in == len(charges) + len(dropped) unless the whole message was filtered.
    """

    charges: list[MappedCharge]
    dropped: list[tuple[str, str]]
    filtered: str | None = None
    lines_in: int = 0


@dataclass
class FieldPlan:
    """One compiled field or var: its getter and how to put the value into the charge dict."""

    name: str
    get: Callable[[Any, Line], Any]
    static: bool
    put: Callable[[dict[str, Any], Any], None] | None  # None for vars
    # For the code generator: how the getter was built, and the value's key path in the
    # charge dict (None: only `put` knows, e.g. coverage[1].member_id).
    parts: FieldParts | None = None
    keys: tuple[str, ...] | None = None


@dataclass
class CompiledMapping:
    """A mapping compiled once at load; `apply` is called for every message."""

    name: str
    version: str
    file_hash: str
    path: Path
    input: str
    iterate: str | None
    files: list[Path]
    static_vars: list[FieldPlan]
    line_vars: list[FieldPlan]
    static_fields: list[FieldPlan]
    line_fields: list[FieldPlan]
    message_filters: list[CompiledFilter]
    early_filters: list[CompiledFilter]
    late_filters: list[CompiledFilter]
    rules: list[CompiledRule]
    skeleton: Callable[[], dict[str, Any]]
    build: Callable[[dict[str, Any]], Charge]
    setters: dict[str, Callable[[dict[str, Any], Any, Line], None]]
    copy_data: Callable[[dict[str, Any]], dict[str, Any]]
    # Message-level parts (patient, coverage ...) no rule writes: built once per message
    # and shared by that message's charges.
    shared_parts: list[tuple[str, Callable[[Any], Any]]]
    explainer: Callable[[], CompiledMapping] | None = field(default=None, repr=False)
    _explaining: CompiledMapping | None = field(default=None, repr=False)
    # The generated specialised apply (engine.mapping.codegen), when the mapping has one.
    fast: Callable[[Any, str], MappingResult] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Plain tuples: the per-line loop reads them without attribute lookups.
        self.line_steps_vars = [(p.name, p.get) for p in self.line_vars]
        self.line_steps = [(p.get, p.put) for p in self.line_fields if p.put is not None]

    def __repr__(self) -> str:
        return f"CompiledMapping({self.name!r}, version={self.version!r}, input={self.input!r})"

    # -- entry point -------------------------------------------------------------------

    def apply(self, msg: Any, *, channel: str, explain: bool = False) -> MappingResult:
        """Map one parsed HL7 Message, or one FHIR context dict, into charges.

        Raises MappingError only for a lookup whose missing-key policy is `fail` (or a
        message filter whose expression fails). With `explain`, every MappedCharge says
        for each field which path, lookup or rule produced it (slower; for dry runs).
        """
        if explain and self.explainer is not None:
            if self._explaining is None:
                self._explaining = self.explainer()
            return self._explaining.apply(msg, channel=channel, explain=True)
        if self.fast is not None and not explain:
            return self.fast(msg, channel)
        return self.apply_reference(msg, channel=channel, explain=explain)

    def apply_reference(self, msg: Any, *, channel: str, explain: bool = False) -> MappingResult:
        """`apply` through the compiled closures only: the reference the generated code
        must agree with (tests compare the two)."""
        if self.input == "fhir":
            return self._apply_fhir(msg, channel, explain)
        control_id = msg.control_id or ""
        lines = msg.groups(self.iterate) if self.iterate else [msg]
        base_ns: dict[str, Any] = {
            "hl7": msg.get, "control_id": control_id, "message_type": msg.message_type,
        }
        return self._run(msg, lines, base_ns, control_id, channel, explain, self._hl7_line_id)

    def _hl7_line_id(self, scope: Any, index: int) -> str:
        if self.iterate:
            set_id = scope.anchor.get(1)
            if set_id:
                return str(set_id)
        return str(index)

    def _apply_fhir(self, context: dict[str, Any], channel: str, explain: bool) -> MappingResult:
        context = _with_resource_types(context)
        control_id = str(context.get("control_id") or "")
        if self.iterate:
            found = context.get(self.iterate)
            items = found if isinstance(found, list) else ([found] if found else [])
            lines = [{**context, self.iterate: item} for item in items]
        else:
            lines = [context]
        base_ns = {k: v for k, v in context.items() if isinstance(k, str)}
        base_ns["control_id"] = control_id
        return self._run(context, lines, base_ns, control_id, channel, explain,
                         self._fhir_line_id)

    def _fhir_line_id(self, scope: Any, index: int) -> str:
        item = scope.get(self.iterate) if self.iterate else None
        if isinstance(item, dict):
            for ident in item.get("identifier") or []:
                if isinstance(ident, dict) and ident.get("value"):
                    system = ident.get("system") or ""
                    return f"{system}|{ident['value']}" if system else str(ident["value"])
            if item.get("id"):
                return f"{self.iterate}/{item['id']}"
        return str(index)

    # -- the per-message run -------------------------------------------------------------

    def _run(self, whole: Any, lines: list[Any], base_ns: dict[str, Any], control_id: str,
             channel: str, explain: bool, line_id_of: Callable[[Any, int], str]
             ) -> MappingResult:
        fhir = self.input == "fhir"
        lines_in = len(lines)
        if not lines:
            # Nothing to iterate (an ADT on a DFT channel): no charges, nothing to compute.
            return MappingResult([], [], None, 0)
        shared = Line({}, base_ns, explain)
        for plan in self.static_vars:
            value = plan.get(whole, shared)
            base_ns[plan.name] = None if value is STOP else value
        for flt in self.message_filters:
            try:
                reason = flt.matches(whole, base_ns)
            except Exception as exc:  # a broken message filter must not pass messages silently
                raise MappingError(f"message filter {flt.name!r} could not be evaluated "
                                   f"({type(exc).__name__}: {exc})") from None
            if reason is not None:
                return MappingResult([], [], f"{flt.name}: {reason}", lines_in)
        # Message-level values fill a template once; each charge starts from a copy of it.
        template = self.skeleton()
        static_explain: dict[str, str] = {}
        for plan in self.static_fields:
            if explain:
                shared.trail = []
            value = plan.get(whole, shared)
            if value is not None and value is not STOP and plan.put is not None:
                plan.put(template, value)
            if explain:
                static_explain[plan.name] = " -> ".join(shared.trail or []) or "(empty)"
        for key, build in self.shared_parts:
            template[key] = build(template[key])
        static_findings = shared.findings

        charges: list[MappedCharge] = []
        dropped: list[tuple[str, str]] = []
        seen_ids: set[str] = set()
        source_base = {
            "channel": channel, "control_id": control_id, "mapping": self.name,
            "mapping_version": self.version, "mapping_hash": self.file_hash,
        }
        copy_data, line_vars, early = self.copy_data, self.line_steps_vars, self.early_filters
        line_fields = self.line_steps
        for index, group in enumerate(lines, 1):
            scope = group if fhir or group is whole else LineSource(group)
            line_id = line_id_of(group, index)
            if line_id in seen_ids:
                line_id = f"{line_id}#{index}"  # a repeated set id must not merge two charges
            seen_ids.add(line_id)
            ns = base_ns.copy()
            ns["line"] = index
            if fhir:
                ns.update(group)
            else:
                ns["hl7"] = scope.get
            if early:
                reason = self._first_filter(early, scope, ns)
                if reason is not None:
                    dropped.append((line_id, reason))
                    continue
            data = copy_data(template)
            ns["charge"] = data
            line = Line(data, ns, explain)
            if static_findings:
                line.findings.extend(static_findings)
            for name, get in line_vars:
                value = get(scope, line)
                ns[name] = None if value is STOP else value
            if explain:
                self._explained_fields(scope, line, static_explain)
            else:
                for get, put in line_fields:
                    value = get(scope, line)
                    if value is not None and value is not STOP:
                        put(data, value)
            reason = None
            if self.late_filters:
                reason = self._first_filter(self.late_filters, scope, ns, line)
            if reason is None and self.rules:
                reason = self._rules(line)
            if reason is not None:
                dropped.append((line_id, reason))
                continue
            charges.append(self._finish(line, line_id, index, control_id, source_base))
        return MappingResult(charges, dropped, None, lines_in)

    def _explained_fields(self, scope: Any, line: Line, static_explain: dict[str, str]) -> None:
        explain = line.explain if line.explain is not None else {}
        explain.update(static_explain)
        for plan in self.line_fields:
            line.trail = []
            value = plan.get(scope, line)
            if value is not None and value is not STOP and plan.put is not None:
                plan.put(line.data, value)
            explain[plan.name] = " -> ".join(line.trail) or "(empty)"

    @staticmethod
    def _first_filter(filters: list[CompiledFilter], scope: Any, ns: dict[str, Any],
                      line: Line | None = None) -> str | None:
        for flt in filters:
            try:
                reason = flt.matches(scope, ns)
            except Exception as exc:  # the analyst's expression failed on this data
                if line is None:
                    raise
                line.hold(f"mapping.filter.{flt.name}", None,
                          f"filter {flt.name!r} could not be evaluated "
                          f"({type(exc).__name__}: {exc})")
                continue
            if reason is not None:
                return f"{flt.name}: {reason}"
        return None

    def _rules(self, line: Line) -> str | None:
        """Run the rules in order; returns the drop reason if a rule dropped the charge."""
        for rule in self.rules:
            reason = self._rule(rule, line)
            if reason is not None:
                return reason
        return None

    @staticmethod
    def _rule(rule: CompiledRule, line: Line) -> str | None:
        """Run one rule (its `when:` first); returns the drop reason if it dropped the charge."""
        ns, data = line.ns, line.data
        try:
            if rule.when is not None and not rule.when(ns):
                return None
            for name, setter, value, is_expr in rule.sets:
                setter(data, value(ns) if is_expr else value, line)
                if line.explain is not None:
                    line.explain[name] = f"rule {rule.name}"
            if rule.add_modifier:
                modifiers = data["procedure"]["modifiers"]
                for modifier in rule.add_modifier:
                    if modifier not in modifiers:
                        modifiers.append(modifier)
                if line.explain is not None:
                    before = line.explain.get("procedure.modifiers", "(empty)")
                    line.explain["procedure.modifiers"] = f"{before} + rule {rule.name}"
            if rule.hold is not None:
                line.findings.append(Finding(rule=f"mapping.rule.{rule.name}",
                                             severity="hold", message=rule.hold(ns)))
            if rule.warn is not None:
                line.findings.append(Finding(rule=f"mapping.rule.{rule.name}",
                                             severity="warn", message=rule.warn(ns)))
            if rule.drop is not None:
                return f"rule {rule.name}: {rule.drop(ns)}"
        except Exception as exc:  # the analyst's expression failed on this data
            line.hold(f"mapping.rule.{rule.name}", None,
                      f"rule {rule.name!r} could not be evaluated "
                      f"({type(exc).__name__}: {exc})")
        return None

    def _finish(self, line: Line, line_id: str, index: int, control_id: str,
                source_base: dict[str, Any]) -> MappedCharge:
        data = line.data
        if data["transaction_type"] not in _TRANSACTION_TYPES:
            line.hold("mapping.invalid_value", "transaction_type",
                      f"transaction_type: {data['transaction_type']!r} is neither charge nor "
                      "credit")
            data["transaction_type"] = "charge"
        if data["diagnoses"]:
            # A diagnosis without a code (an empty DG1-3) is no diagnosis.
            data["diagnoses"] = [d for d in data["diagnoses"]
                                 if type(d) is not dict or d.get("code")]
        if self.input == "fhir" and data["transaction_type"] == "credit":
            # A FHIR credit reverses the same ChargeItem: it needs its own id.
            line_id = f"{line_id}#credit"
        # FHIR: without a request control id the ChargeItem's own key names the charge.
        data["charge_id"] = make_charge_id(source_base["channel"], control_id or self.input,
                                           line_id)
        data["source"] = {**source_base, "line": index, "line_id": line_id}
        charge = self.build(data)
        return MappedCharge(charge, line.findings, line.explain or {})


def _with_resource_types(context: dict[str, Any]) -> dict[str, Any]:
    """FHIRPath filters on resourceType: add it where a context resource lacks it."""
    fixed: dict[str, Any] | None = None
    for key, value in context.items():
        if not isinstance(key, str) or not key[:1].isupper():
            continue
        items = value if isinstance(value, list) else [value]
        if all(not isinstance(v, dict) or v.get("resourceType") == key for v in items):
            continue
        if fixed is None:
            fixed = dict(context)
        repaired = [{**v, "resourceType": key} if isinstance(v, dict) else v for v in items]
        fixed[key] = repaired if isinstance(value, list) else repaired[0]
    return fixed if fixed is not None else context
