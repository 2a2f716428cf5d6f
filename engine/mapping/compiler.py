"""Compiling validated mapping specs into plain closures, once per load.

A compiled field is `get(scope, line) -> value | None`: it reads its source (path, constant,
expression, or one record per segment), normalizes, looks up, converts and falls back, and
reports problems in the data as findings on `line` instead of raising. Problems in the
mapping itself (bad paths, unknown fields, tables or columns) are collected at compile time
with their file:line:col.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.charge import Finding
from engine.config.yaml_positions import PositionedDocument
from engine.errors import MappingError
from engine.hl7 import path as hl7_path
from engine.mapping import accessors
from engine.mapping.convert import (
    NORMALIZERS,
    PARAMETRIC,
    TYPES,
    make_normalizer,
    to_target,
    type_word,
)
from engine.mapping.expressions import ExpressionSyntaxError, compile_expression, compile_template
from engine.mapping.spec import FieldSpec, FilterSpec, LookupSpec, RuleSpec, did_you_mean
from engine.mapping.tables import Table
from engine.mapping.targets import (
    RecordTarget,
    Target,
    all_target_names,
    parse_target,
)

__all__ = ["STOP", "Compiler", "FieldParts", "Line", "Site"]

# Returned by a step that already dealt with the value (a hold finding was recorded):
# the field stays empty and neither `else:` nor `default:` apply.
STOP: Any = object()
Getter = Callable[[Any, "Line"], Any]
_LIST_CELL = re.compile(r"[\s;,]+")
# Charge fields holding PHI: their raw values are never quoted in findings.
_PHI_PREFIXES = ("patient.", "coverage", "subscriber.")


class Line:
    """Per-charge working state: findings, the explain trail and the expression namespace."""

    __slots__ = ("data", "explain", "findings", "ns", "trail")

    def __init__(self, data: dict[str, Any], ns: dict[str, Any], explain: bool) -> None:
        self.data = data
        self.ns = ns
        self.findings: list[Finding] = []
        self.explain: dict[str, str] | None = {} if explain else None
        self.trail: list[str] | None = [] if explain else None

    def hold(self, rule: str, field_name: str | None, message: str) -> None:
        """Record a hold finding on this charge."""
        self.findings.append(Finding(rule=rule, severity="hold", field=field_name,
                                     message=message))


@dataclass
class Site:
    """Where a spec was written: the document and the key path inside it."""

    doc: PositionedDocument
    loc: tuple[str | int, ...]

    def child(self, *keys: str | int) -> Site:
        """The site of a key below this one."""
        return Site(self.doc, (*self.loc, *keys))

    def problem(self, what: str) -> str:
        """`file:line:col: where: what`."""
        where = ".".join(str(k) for k in self.loc) or "(document)"
        return f"{self.doc.where(self.loc)}: {where}: {what}"


def _quote(field_name: str, value: Any) -> str:
    if field_name.startswith(_PHI_PREFIXES):
        return "the value"
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


@dataclass
class FieldParts:
    """What a scalar or list field's getter was built from, for the code generator.

    `kind` is "field" (path/constant/expression + steps), "values" (a plain list filling
    records' primary key) or "each" (one record per segment). The generator reproduces
    exactly the getter these parts made, so both paths share every decision taken here.
    """

    kind: str
    name: str
    get: Getter
    paths: list[Any] = field(default_factory=list)
    read: Callable[[Any], Any] | None = None
    raw: Getter | None = None
    steps: list[Callable[[str], Any]] = field(default_factory=list)
    lookup: Any = None
    convert: Any = None
    retarget: Any = None
    type_name: str | None = None
    is_list: bool = False
    fallback: FieldParts | None = None
    default: Any = None
    # records: the item skeleton, (keys, parts) per item field, the order_by accessor
    skeleton: Callable[[], dict[str, Any]] | None = None
    key: str = ""
    inner: FieldParts | None = None
    segment: str = ""
    items: list[tuple[tuple[str, ...], FieldParts]] = field(default_factory=list)
    order: Callable[[Any], Any] | None = None
    # Records a converter's ValueError as a hold finding: bad(line, value, exc).
    bad: Callable[[Line, Any, Exception], None] | None = None
    # The compiled `expr:` that `raw` evaluates on the line's namespace.
    expression: Callable[..., Any] | None = None


@dataclass
class _Source:
    """A compiled `FieldSpec` chain for one target: the getter and whether it is per message."""

    get: Getter
    static: bool
    parts: FieldParts | None = None


@dataclass
class Compiler:
    """Compiles the specs of one mapping; `problems` collects every mapping error."""

    input: str
    iterate: str | None
    tables: dict[str, Table]
    var_names: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Explaining compiles a twin of the mapping whose steps record where values came from;
    # the everyday mapping carries no tracing code at all.
    explain: bool = False

    # -- raw sources --------------------------------------------------------------------

    def _accessor(self, text: str, many: bool, site: Site) -> tuple[Any, list[str], bool] | None:
        """Compile a path; returns (accessor, alternatives, is_static) or None after a problem."""
        try:
            if self.input == "fhir":
                get, parts = accessors.fhir_accessor(text, many)
                static = accessors.fhir_resource_type(text) != self.iterate
            else:
                get, parts = accessors.hl7_accessor(text, many)
                static = all(seg in accessors.MESSAGE_SEGMENTS and seg != self.iterate
                             for seg in accessors.path_segments(text))
        except accessors.PathError as exc:
            self.problems.append(site.problem(str(exc)))
            return None
        return get, parts, static

    def expression(self, text: str, site: Site) -> Callable[..., Any] | None:
        """Compile a Jinja expression, or record the problem and return None."""
        try:
            return compile_expression(text)
        except ExpressionSyntaxError as exc:
            self.problems.append(site.problem(str(exc)))
            return None

    def template(self, text: str, site: Site) -> Callable[[dict[str, Any]], str]:
        """Compile a reason template (a plain text when it has no `{{ }}`)."""
        try:
            return compile_template(text)
        except ExpressionSyntaxError as exc:
            self.problems.append(site.problem(str(exc)))
            return lambda _ns: text

    # -- normalizers, lookups, types ------------------------------------------------------

    def _normalizers(self, spec: FieldSpec, site: Site) -> list[Callable[[str], Any]]:
        steps: list[Callable[[str], Any]] = []
        for i, item in enumerate(spec.normalize):
            where = site.child("normalize", i)
            if isinstance(item, str):
                if item in NORMALIZERS:
                    steps.append(NORMALIZERS[item])
                    continue
                if item in PARAMETRIC:
                    self.problems.append(where.problem(
                        f"{item} needs an argument, e.g. {{{item}: "
                        f"{'5' if item == 'pad' else repr(' ')}}}"))
                    continue
                self.problems.append(where.problem(
                    f"unknown normalizer {item!r}"
                    f"{did_you_mean(item, [*NORMALIZERS, *PARAMETRIC])}"))
            elif isinstance(item, dict) and len(item) == 1:
                ((name, arg),) = item.items()
                try:
                    steps.append(make_normalizer(str(name), arg))
                except ValueError as exc:
                    hint = did_you_mean(str(name), [*NORMALIZERS, *PARAMETRIC]) \
                        if str(name) not in PARAMETRIC else ""
                    self.problems.append(where.problem(f"{exc}{hint}"))
            else:
                self.problems.append(where.problem(
                    "a normalizer is a name (trim) or one name with an argument ({pad: 5})"))
        return steps

    def _lookup(self, spec: LookupSpec, site: Site, field_name: str,
                is_list: bool) -> Callable[[Any, Line], Any] | None:
        table = self.tables.get(spec.table)
        if table is None:
            self.problems.append(site.child("table").problem(
                f"unknown lookup table {spec.table!r}"
                f"{did_you_mean(spec.table, list(self.tables))}"
                " (declare it under tables:)"))
            return None
        data_columns = table.columns[1:]
        column = spec.column
        if column is None:
            if len(data_columns) != 1:
                self.problems.append(site.problem(
                    f"table {spec.table!r} has several columns; name one with "
                    f"`lookup: {spec.table}.<column>` (columns: {', '.join(data_columns)})"))
                return None
            column = data_columns[0]
        elif column not in table.columns:
            self.problems.append(site.child("column").problem(
                f"table {spec.table!r} has no column {column!r}"
                f"{did_you_mean(column, table.columns)}"))
            return None
        rows, policy, default, name = table.rows, spec.missing, spec.default, spec.table
        label = f"{name}.{column}"

        def lookup(key: Any, line: Line) -> Any:
            row = rows.get(key.strip() if isinstance(key, str) else str(key))
            if row is None:
                if policy == "default":
                    return default
                if policy == "keep":
                    return key
                message = (f"{field_name}: {_quote(field_name, key)} is not in lookup table "
                           f"{name!r}")
                if policy == "fail":
                    raise MappingError(message)
                line.hold("mapping.lookup_missing", field_name,
                          message + " (add it to the table or fix the source value)")
                return STOP
            value = row.get(column)
            if is_list and isinstance(value, str):
                # A CSV cell filling a list (default modifiers) holds items split by
                # spaces, commas or semicolons.
                return [v for v in _LIST_CELL.split(value) if v]
            return value

        lookup.label = label  # type: ignore[attr-defined]
        # What the code generator inlines: a hit is a dict read, a miss calls `lookup`.
        lookup.parts = (rows, column, policy, default, is_list)  # type: ignore[attr-defined]
        return lookup

    # -- fields -------------------------------------------------------------------------

    def field(self, spec: FieldSpec, target: Target | None, field_name: str,
              site: Site) -> _Source | None:
        """Compile a scalar or list field (or a var when `target` is None)."""
        is_list = target.is_list if target is not None else False
        type_name = spec.type or (target.type if target is not None else None)
        target_type = target.type if target is not None else None
        static = True
        raw: Callable[[Any, Line], Any] | None = None
        read: Callable[[Any], Any] | None = None
        expression: Callable[..., Any] | None = None
        how = ""
        if spec.each is not None or spec.fields is not None:
            self.problems.append(site.child("each").problem(
                f"each: builds records; {field_name} is not a list of records "
                "(each: belongs on coverage or diagnoses)"))
            return None
        broken = False
        if spec.path is not None:
            compiled = self._accessor(spec.path, is_list, site.child("path"))
            if compiled is None:
                # Keep checking the rest of the field so one run reports every problem.
                broken = True
                compiled = (lambda _scope: None, [spec.path], True)
            get, parts, static = compiled
            how = spec.path
            if self.explain:
                raw = self._traced(get, parts, is_list)
            else:
                read = get
        elif spec.expr is not None:
            expr = self.expression(spec.expr, site.child("expr"))
            if expr is None:
                broken = True
                expr = _no_expression
            static = False
            how = f"expr {spec.expr}"
            raw = self._expr_getter(expr, field_name, spec.expr)
            expression = expr
        elif spec.has_value:
            constant = self._constant(spec.value, type_name, target_type, is_list, field_name,
                                      site.child("value"))
            how = "value"
            raw = lambda _scope, _line: constant  # noqa: E731
            raw.constant = constant  # type: ignore[attr-defined]
        steps = self._normalizers(spec, site)
        lookup = (self._lookup(spec.lookup, site.child("lookup"), field_name, is_list)
                  if spec.lookup is not None else None)
        if spec.lookup is not None and lookup is None:
            broken = True
        convert = TYPES[type_name] if type_name is not None and (raw or read) is not None \
            and not spec.has_value else None
        if (type_name == "string" and spec.path is not None and self.input == "hl7"
                and lookup is None):
            convert = None  # HL7 values are text already
        # Converting to the field's own type is needed only where the types differ in kind
        # (datetime -> date, integer -> decimal); code and text are both str.
        retarget = target_type if (target_type is not None and type_name != target_type
                                   and not spec.has_value
                                   and (type_name, target_type) != ("code", "string")) else None
        fallback: _Source | None = None
        if spec.else_ is not None:
            fallback = self.field(spec.else_, target, field_name, site.child("else"))
            if fallback is None:
                broken = True
            else:
                static = static and fallback.static
        default = self._constant(spec.default, type_name, target_type, is_list, field_name,
                                 site.child("default")) if spec.default is not None else None
        if broken:
            return None
        get = self._field_getter(raw, read, steps, lookup, convert, retarget, type_name, is_list,
                                 fallback.get if fallback else None, default, field_name, how)
        if self.explain:
            get = _forget_empty(get)
        paths = ([hl7_path.compile_path(part) for part in accessors.split_alternatives(spec.path)]
                 if read is not None and self.input == "hl7" and spec.path is not None else [])
        made = FieldParts("field", field_name, get, paths=paths, read=read, raw=raw,
                           steps=steps, lookup=lookup, convert=convert, retarget=retarget,
                           type_name=type_name, is_list=is_list,
                           fallback=fallback.parts if fallback is not None else None,
                           default=default, bad=bad_value_reporter(field_name, type_name),
                           expression=expression)
        if fallback is not None and fallback.parts is None:
            made.kind = "opaque"
        return _Source(get, static, made)

    def _traced(self, get: Callable[[Any], Any], parts: list[str], many: bool) -> Getter:
        if len(parts) == 1 or self.input == "fhir":
            label = " | ".join(parts)

            def single(scope: Any, line: Line) -> Any:
                value = get(scope)
                if line.trail is not None and value not in (None, []):
                    line.trail.append(label)
                return value

            return single
        singles = [accessors.hl7_accessor(part, many)[0] for part in parts]

        def alternatives(scope: Any, line: Line) -> Any:
            value = get(scope)
            if line.trail is not None and value not in (None, []):
                # Explaining is off the hot path: find which alternative gave the value.
                line.trail.append(next(
                    (part for part, one in zip(parts, singles, strict=True)
                     if one(scope) not in (None, [])), parts[0]))
            return value

        return alternatives

    def _expr_getter(self, expr: Callable[..., Any], field_name: str, text: str) -> Getter:
        label = "expr " + " ".join(text.split())

        def evaluate(_scope: Any, line: Line) -> Any:
            try:
                value = expr(line.ns)
                if line.trail is not None and value is not None:
                    line.trail.append(label)
                return value
            except Exception as exc:  # a data-dependent error (None * 2) must not fail a message
                expression_failed(line, field_name, exc)
                return STOP

        return evaluate

    def _constant(self, value: Any, type_name: str | None, target_type: str | None,
                  is_list: bool, field_name: str, site: Site) -> Any:
        """Convert a constant once at load; a bad constant is a mapping problem."""
        if value is None:
            return None
        try:
            if is_list:
                items = value if isinstance(value, list) else [value]
                return [self._convert_constant(v, type_name, target_type) for v in items]
            return self._convert_constant(value, type_name, target_type)
        except ValueError as exc:
            self.problems.append(site.problem(
                f"{value!r} is not a valid {type_word(type_name or target_type or 'string')} "
                f"for {field_name} ({exc})"))
            return None

    @staticmethod
    def _convert_constant(value: Any, type_name: str | None, target_type: str | None) -> Any:
        if type_name is not None:
            value = TYPES[type_name](value)
        return to_target(value, target_type) if target_type is not None else value

    @staticmethod
    def _field_getter(raw: Getter | None, read: Callable[[Any], Any] | None,
                      steps: list[Callable[[str], Any]],
                      lookup: Callable[[Any, Line], Any] | None, convert: Any, retarget: Any,
                      type_name: str | None, is_list: bool, fallback: Getter | None,
                      default: Any, field_name: str, how: str) -> Getter:
        """The runtime chain for one field; written as one closure to keep calls few."""
        label = getattr(lookup, "label", None)
        bad_value = bad_value_reporter(field_name, type_name)

        def one(value: Any, line: Line) -> Any:
            for step in steps:
                value = step(value)
            if lookup is not None:
                value = lookup(value, line)
                if value is None or value is STOP:
                    return value
                if isinstance(value, list):
                    # A table cell that holds several items (default modifiers).
                    return [v for v in (convert_one(item, line) for item in value)
                            if v is not STOP] if convert is not None else value
            if convert is not None:
                return _converted(value, line, convert, retarget, bad_value)
            return value

        def convert_one(value: Any, line: Line) -> Any:
            try:
                value = convert(value)
                return to_target(value, retarget) if retarget is not None else value
            except ValueError as exc:
                bad_value(line, value, exc)
                return STOP

        def get(scope: Any, line: Line) -> Any:
            if read is not None:
                value = read(scope)
            else:
                value = raw(scope, line) if raw is not None else None
                if value is STOP:
                    return STOP
            if is_list:
                if value:
                    items: list[Any] = []
                    for item in value if isinstance(value, list) else [value]:
                        result = one(item, line)
                        if isinstance(result, list):
                            items += [r for r in result if r is not None and r != ""]
                        elif result is not None and result is not STOP and result != "":
                            items.append(result)
                    if items:
                        if label is not None and line.trail is not None:
                            line.trail.append(f"lookup {label}")
                        return items
                    value = None
            elif value is not None and value != "":
                if isinstance(value, list):
                    value = value[0] if value else None
                if value is not None:
                    value = one(value, line)
                    if value is STOP:
                        return STOP
                    if value is not None and value != "":
                        if label is not None and line.trail is not None:
                            line.trail.append(f"lookup {label}")
                        return value
            if fallback is not None:
                value = fallback(scope, line)
                if value is not None:
                    return value
            if default is not None and line.trail is not None:
                line.trail.append("default")
            return default

        if not steps and lookup is None and convert is None and fallback is None \
                and default is None and not is_list:
            # A plain text path: nothing to do but read it.
            if read is not None:
                if getattr(read, "takes_line", False):
                    return typing.cast(Getter, read)
                return lambda scope, _line: read(scope)
            if raw is not None:
                return raw
        if read is not None and fallback is None and not is_list:
            # The everyday shapes get closures with fewer calls (same results as `get`).
            return _scalar_getter(read, steps, lookup, convert, retarget, default, bad_value)
        return get

    # -- records (coverage, diagnoses) ----------------------------------------------------

    def records(self, spec: FieldSpec, target: RecordTarget, site: Site,
                skeleton: Callable[[], dict[str, Any]]) -> _Source | None:
        """Compile `each:` (one record per segment/resource) or a plain list for the primary."""
        fallback: _Source | None = None
        if spec.else_ is not None:
            fallback = self.records(spec.else_, target, site.child("else"), skeleton)
            if fallback is None:
                return None
        if spec.each is None:
            if target.primary is None:
                self.problems.append(site.problem(
                    f"{target.name} is a list of records: write each: with fields: "
                    f"({', '.join(target.fields)})"))
                return None
            item_target = target.fields[target.primary]
            list_target = Target(target.name, item_target.keys, item_target.type, is_list=True)
            plain = self.field(spec.model_copy(update={"else_": None}), list_target,
                               target.name, site)
            if plain is None:
                return None
            key = target.primary
            get_values = plain.get

            def from_values(scope: Any, line: Line) -> Any:
                values = get_values(scope, line)
                if values and values is not STOP:
                    out = []
                    for value in values:
                        item = skeleton()
                        item[key] = value
                        out.append(item)
                    return out
                return fallback.get(scope, line) if fallback is not None else None

            parts = FieldParts("values", target.name, from_values, skeleton=skeleton, key=key,
                               inner=plain.parts,
                               fallback=fallback.parts if fallback is not None else None)
            if plain.parts is None or (fallback is not None and fallback.parts is None):
                parts.kind = "opaque"
            return _Source(from_values, plain.static and (fallback is None or fallback.static),
                           parts)
        return self._each(spec, target, site, skeleton, fallback)

    def _each(self, spec: FieldSpec, target: RecordTarget, site: Site,
              skeleton: Callable[[], dict[str, Any]], fallback: _Source | None) -> _Source | None:
        each = spec.each or ""
        if self.input == "fhir":
            try:
                kind = accessors.fhir_resource_type(each)
            except accessors.PathError as exc:
                self.problems.append(site.child("each").problem(str(exc)))
                return None
            static = kind != self.iterate
        else:
            kind = each.strip()
            if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", kind):
                self.problems.append(site.child("each").problem(
                    f"each: names a segment (IN1, DG1), got {each!r}"))
                return None
            if kind not in accessors.HL7_SEGMENTS and not kind.startswith("Z"):
                self.problems.append(site.child("each").problem(
                    f"unknown segment {kind!r}{did_you_mean(kind, accessors.HL7_SEGMENTS)}"))
                return None
            static = kind in accessors.MESSAGE_SEGMENTS
        setters: list[tuple[tuple[str, ...], Getter]] = []
        item_parts: list[tuple[tuple[str, ...], FieldParts | None]] = []
        for name, item_spec in (spec.fields or {}).items():
            item_site = site.child("fields", name)
            item_target = target.fields.get(name)
            if item_target is None:
                self.problems.append(item_site.problem(
                    f"{target.name} records have no field {name!r}"
                    f"{did_you_mean(name, list(target.fields))}"))
                continue
            compiled = self.field(item_spec, item_target, f"{target.name}.{name}", item_site)
            if compiled is None:
                continue
            static = static and compiled.static
            setters.append((item_target.keys, compiled.get))
            item_parts.append((item_target.keys, compiled.parts))
        order: Callable[[Any], Any] | None = None
        if spec.order_by is not None:
            compiled_order = self._accessor(spec.order_by, False, site.child("order_by"))
            if compiled_order is None:
                return None
            order = compiled_order[0]
        fhir = self.input == "fhir"
        names = list(spec.fields or {})

        def build(item_scope: Any, line: Line) -> dict[str, Any] | None:
            item = skeleton()
            filled = False
            for keys, get in setters:
                value = get(item_scope, line)
                if value is None or value is STOP:
                    continue
                filled = True
                holder = item
                for k in keys[:-1]:
                    holder = holder[k]
                holder[keys[-1]] = value
            return item if filled else None

        def get_records(scope: Any, line: Line) -> Any:
            if fhir:
                found = scope.get(kind) if isinstance(scope, dict) else None
                resources = found if isinstance(found, list) else ([found] if found else [])
                # Lists parallel to the iterated one (Payor[i] is Coverage[i]'s payer) are
                # narrowed to the same item.
                parallel = [k for k, v in scope.items() if k != kind and isinstance(v, list)
                            and len(v) == len(resources)]
                scopes: list[Any] = []
                for i, resource in enumerate(resources):
                    item_scope = {**scope, kind: resource}
                    for key in parallel:
                        item_scope[key] = scope[key][i]
                    scopes.append(item_scope)
            else:
                scopes = [accessors.ItemScope(seg, scope) for seg in scope.segments(kind)]
            if order is not None:
                scopes.sort(key=lambda s: _order_key(order(s)))
            trail, line.trail = line.trail, None  # explain names the records, not each value
            out = [item for item in (build(s, line) for s in scopes) if item is not None]
            line.trail = trail
            if out:
                if trail is not None:
                    trail.append(f"each {each} ({', '.join(names)})")
                return out
            return fallback.get(scope, line) if fallback is not None else None

        parts = FieldParts("each", target.name, get_records, skeleton=skeleton, segment=kind,
                           items=[(k, p) for k, p in item_parts if p is not None], order=order,
                           fallback=fallback.parts if fallback is not None else None)
        if fhir or any(p is None for _, p in item_parts) or (
                fallback is not None and fallback.parts is None):
            parts.kind = "opaque"
        return _Source(get_records, static and (fallback is None or fallback.static), parts)

    # -- filters and rules ----------------------------------------------------------------

    def filter(self, spec: FilterSpec, site: Site) -> CompiledFilter | None:
        """Compile a filter; a `path:` test reads the path, a `when:` test the namespace."""
        reason = self.template(spec.reason, site.child("reason"))
        name = spec.name or f"filter {site.loc[-1] if site.loc else ''}"
        if spec.when is not None:
            expr = self.expression(spec.when, site.child("when"))
            if expr is None:
                return None
            return CompiledFilter(name, spec.drop, None, expr, None, reason)
        compiled = self._accessor(spec.path or "", False, site.child("path"))
        if compiled is None:
            return None
        get = compiled[0]
        test: Callable[[Any], bool]
        # (kind, operand) says the same as `test` for the code generator to write inline.
        how: tuple[str, Any]
        if spec.in_ is not None:
            allowed = {str(v) for v in spec.in_}
            test = lambda v: v is not None and str(v).strip() in allowed  # noqa: E731
            how = ("in", allowed)
        elif spec.not_in is not None:
            refused = {str(v) for v in spec.not_in}
            test = lambda v: v is None or str(v).strip() not in refused  # noqa: E731
            how = ("not_in", refused)
        elif spec.matches is not None:
            try:
                pattern = re.compile(spec.matches)
            except re.error as exc:
                self.problems.append(site.child("matches").problem(
                    f"regular expression does not compile ({exc})"))
                return None
            test = lambda v: v is not None and pattern.search(str(v)) is not None  # noqa: E731
            how = ("matches", pattern)
        elif spec.exists is not None:
            wanted = spec.exists
            test = lambda v: (v is not None) == wanted  # noqa: E731
            how = ("exists", wanted)
        else:
            expected = str(spec.equals)
            test = lambda v: v is not None and str(v).strip() == expected  # noqa: E731
            how = ("equals", expected)
        paths = ([hl7_path.compile_path(p) for p in compiled[1]] if self.input == "hl7"
                 else [])
        return CompiledFilter(name, spec.drop, get, None, test, reason, paths, how)

    def rule(self, spec: RuleSpec, site: Site, setter_for: Callable[[str, Site], Any]
             ) -> CompiledRule | None:
        """Compile a rule's condition and actions; `setter_for` resolves `set:` field names."""
        when = self.expression(spec.when, site.child("when")) if spec.when else None
        broken = bool(spec.when) and when is None
        sets: list[tuple[str, Callable[[dict[str, Any], Any, Line], None], Any, bool]] = []
        for name, value in (spec.set or {}).items():
            setter = setter_for(name, site.child("set", name))
            if setter is None:
                continue
            if isinstance(value, dict) and set(value) == {"expr"}:
                expr = self.expression(str(value["expr"]), site.child("set", name, "expr"))
                if expr is not None:
                    sets.append((name, setter, expr, True))
            else:
                sets.append((name, setter, value, False))
        if broken:
            return None
        return CompiledRule(
            name=spec.name, when=when, sets=sets, add_modifier=list(spec.add_modifier or []),
            hold=self.template(spec.hold, site.child("hold")) if spec.hold else None,
            warn=self.template(spec.warn, site.child("warn")) if spec.warn else None,
            drop=self.template(spec.drop, site.child("drop")) if spec.drop else None)

    def target_of(self, name: str, site: Site) -> tuple[Target | RecordTarget, int | None,
                                                        str | None] | None:
        """Resolve a field name or record a problem with the closest names."""
        target, index, item = parse_target(name)
        if target is None:
            self.problems.append(site.problem(
                f"unknown charge field {name!r}{did_you_mean(name, all_target_names())}"))
            return None
        return target, index, item


def expression_failed(line: Line, field_name: str, exc: Exception) -> None:
    """What a field does when its expression raised on this data: a hold finding."""
    line.hold("mapping.expression_error", field_name,
              f"{field_name}: the mapping expression failed ({type(exc).__name__}: {exc})")


def bad_value_reporter(field_name: str, type_name: str | None
                       ) -> Callable[[Line, Any, Exception], None]:
    """What a field does with a value its type converter refused: a hold finding."""

    def bad_value(line: Line, value: Any, exc: Exception) -> None:
        line.hold("mapping.invalid_value", field_name,
                  f"{field_name}: {_quote(field_name, value)} is not a valid "
                  f"{type_word(type_name or 'string')} ({exc})")

    return bad_value


def _scalar_getter(read: Callable[[Any], Any], steps: list[Callable[[str], Any]],
                   lookup: Callable[[Any, Line], Any] | None, convert: Any, retarget: Any,
                   default: Any, bad_value: Callable[[Line, Any, Exception], None]) -> Getter:
    """A scalar field read from one path: normalize, look up, convert, else the default."""
    if lookup is None and not steps and convert is not None:

        def get_converted(scope: Any, line: Line) -> Any:
            value = read(scope)
            if value is None or value == "":
                return default
            try:
                value = convert(value)
                return to_target(value, retarget) if retarget is not None else value
            except ValueError as exc:
                bad_value(line, value, exc)
                return STOP

        return get_converted

    def get_looked_up(scope: Any, line: Line) -> Any:
        value = read(scope)
        if value is None or value == "":
            return default
        for step in steps:
            value = step(value)
        if lookup is not None:
            value = lookup(value, line)
            if value is STOP:
                return STOP
            if isinstance(value, list):
                value = value[0] if value else None
        if value is None or value == "":
            return default
        if convert is not None:
            return _converted(value, line, convert, retarget, bad_value)
        return value

    return get_looked_up


def _no_expression(_ns: dict[str, Any]) -> None:
    return None


def _forget_empty(get: Getter) -> Getter:
    """Explaining: a source that ended up empty leaves no trace in the explanation."""

    def explained(scope: Any, line: Line) -> Any:
        mark = len(line.trail) if line.trail is not None else 0
        value = get(scope, line)
        if (value is None or value is STOP) and line.trail is not None:
            del line.trail[mark:]
        return value

    return explained


def _order_key(value: Any) -> tuple[int, float, str]:
    text = "" if value is None else str(value).strip()
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


@dataclass
class CompiledFilter:
    """A filter ready to run: either `get` + `test` (path) or `when` (expression)."""

    name: str
    drop: str
    get: Callable[[Any], Any] | None
    when: Callable[..., Any] | None
    test: Callable[[Any], bool] | None
    reason: Callable[[dict[str, Any]], str]
    # The compiled HL7 alternatives `get` reads (first non-empty wins), for the generator.
    paths: list[Any] = field(default_factory=list)
    # What `test` checks, as (kind, operand): in, not_in, matches, exists or equals.
    test_kind: tuple[str, Any] | None = None

    def matches(self, scope: Any, ns: dict[str, Any]) -> str | None:
        """The rendered reason when the filter drops, else None."""
        if self.get is not None and self.test is not None:
            value = self.get(scope)
            if not self.test(value):
                return None
            return self.reason({**ns, "value": value})
        if self.when is not None and self.when(ns):
            return self.reason(ns)
        return None


@dataclass
class CompiledRule:
    """A rule ready to run; `sets` holds (field, setter, value or expression, is_expr)."""

    name: str
    when: Callable[..., Any] | None
    sets: list[tuple[str, Callable[[dict[str, Any], Any, Line], None], Any, bool]]
    add_modifier: list[str]
    hold: Callable[[dict[str, Any]], str] | None
    warn: Callable[[dict[str, Any]], str] | None
    drop: Callable[[dict[str, Any]], str] | None


def _converted(value: Any, line: Any, convert: Any, retarget: Any, bad_value: Any) -> Any:
    """`value` converted to its field's type (and target), or STOP after recording the
    finding when it does not convert."""
    try:
        value = convert(value)
        if retarget is not None:
            value = to_target(value, retarget)
    except ValueError as exc:
        bad_value(line, value, exc)
        return STOP
    return value
