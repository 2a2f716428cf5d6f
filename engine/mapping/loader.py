"""Loading a mapping file: YAML with positions, `extends:`, tables, validation, compilation.

`load_mapping` either returns a CompiledMapping or raises ConfigError listing every problem
as `file:line:col: where: what`, with a hint where one helps.
"""

from __future__ import annotations

import hashlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.charge import Charge
from engine.config.yaml_positions import PositionedDocument, load_positioned
from engine.errors import ConfigError
from engine.mapping import accessors
from engine.mapping.build import data_copier, model_builder, model_skeleton
from engine.mapping.codegen import generate
from engine.mapping.compiler import Compiler, Line, Site
from engine.mapping.convert import to_target, type_word
from engine.mapping.mapping import CompiledMapping, FieldPlan
from engine.mapping.spec import FieldSpec, FilterSpec, MappingSpec, RuleSpec, did_you_mean
from engine.mapping.tables import Table, TableError, load_table, table_from_data
from engine.mapping.targets import RecordTarget, Target, top_field, unwrap_optional

__all__ = ["load_mapping", "mapping_files"]

_MAX_EXTENDS = 8
# Names the expression namespace already uses; a var may not shadow them.
_RESERVED_NAMES = {"charge", "line", "hl7", "value", "control_id", "message_type",
                   "decimal", "money", *accessors.FHIR_RESOURCES}


def validation_problems(doc: PositionedDocument, exc: ValidationError) -> list[str]:
    """pydantic errors as `file:line:col: where: what`; unknown keys point at the key."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == "unknown_key":
            loc = (*loc, ctx["key"])
        # Drop pydantic's internal union/shorthand tags from the location.
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith(
            ("function-", "str", "list[", "dict["))))
        where = ".".join(str(p) for p in loc) or "(document)"
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        problems.append(f"{doc.where(loc)}: {where}: {message}")
    return problems


@dataclass
class _Layer:
    """One file of an `extends:` chain."""

    doc: PositionedDocument
    spec: MappingSpec


@dataclass
class _Merged:
    """The chain merged: each entry keeps the site it was written at."""

    tables: dict[str, tuple[Any, Site]] = field(default_factory=dict)
    vars: dict[str, tuple[FieldSpec, Site]] = field(default_factory=dict)
    fields: dict[str, tuple[FieldSpec, Site]] = field(default_factory=dict)
    filters: list[tuple[FilterSpec, Site]] = field(default_factory=list)
    rules: list[tuple[RuleSpec, Site]] = field(default_factory=list)


def _read_layer(path: Path) -> _Layer:
    doc = load_positioned(path, substitute_env=False)
    if not isinstance(doc.data, dict):
        raise ConfigError([f"{path}:1:1: (document): a mapping file is a YAML mapping with "
                           "version:, input:, fields: ..."])
    try:
        spec = MappingSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(doc, exc)) from None
    return _Layer(doc, spec)


def _read_chain(path: Path) -> list[_Layer]:
    """The file and its bases, base first; a missing base or a cycle is a problem."""
    chain: list[_Layer] = []
    seen: list[Path] = []
    current = path
    while True:
        resolved = current.resolve()
        if resolved in seen:
            names = " -> ".join(p.name for p in [*seen, resolved])
            raise ConfigError([f"{chain[0].doc.path}:1:1: extends: cycle {names}"])
        seen.append(resolved)
        layer = _read_layer(current)
        chain.insert(0, layer)
        if layer.spec.extends is None:
            return chain
        if len(seen) > _MAX_EXTENDS:
            raise ConfigError([f"{layer.doc.where(('extends',))}: extends: more than "
                               f"{_MAX_EXTENDS} levels"])
        base = (current.parent / layer.spec.extends)
        if not base.is_file():
            siblings = [p.name for p in current.parent.glob("*.yaml")]
            raise ConfigError([f"{layer.doc.where(('extends',))}: extends: file not found: "
                               f"{layer.spec.extends}{did_you_mean(layer.spec.extends, siblings)}"])
        current = base


def _merge(chain: list[_Layer]) -> _Merged:
    merged = _Merged()
    for layer in chain:
        root = Site(layer.doc, ())
        for name, table in layer.spec.tables.items():
            merged.tables[name] = (table, root.child("tables", name))
        for name, spec in layer.spec.vars.items():
            merged.vars[name] = (spec, root.child("vars", name))
        for name, spec in layer.spec.fields.items():
            merged.fields[name] = (spec, root.child("fields", name))
        for kind, items in (("filters", layer.spec.filters), ("rules", layer.spec.rules)):
            target: list[Any] = merged.filters if kind == "filters" else merged.rules
            for i, item in enumerate(items):
                site = root.child(kind, i)
                # A named filter or rule in a site mapping replaces the base one of that name.
                item_name = getattr(item, "name", None)
                same = [j for j, (old, _) in enumerate(target)
                        if item_name is not None and old.name == item_name]
                if same:
                    target[same[0]] = (item, site)
                else:
                    target.append((item, site))
    return merged


def _load_tables(merged: _Merged, problems: list[str]) -> tuple[dict[str, Table], list[Path]]:
    tables: dict[str, Table] = {}
    files: list[Path] = []
    for name, (spec, site) in merged.tables.items():
        try:
            if spec.rows is not None:
                tables[name] = table_from_data(name, spec.rows, spec.key)
                continue
            path = site.doc.path.parent / spec.file
            if not path.is_file():
                folder = path.parent
                known = [str(p.relative_to(site.doc.path.parent)) for p in folder.glob("*")
                         if p.suffix in (".csv", ".yaml", ".yml")] if folder.is_dir() else []
                problems.append(site.child("file").problem(
                    f"table file not found: {spec.file}{did_you_mean(spec.file, known)}"))
                continue
            tables[name] = load_table(name, path, spec.key)
            files.append(path)
        except TableError as exc:
            problems.append(site.child("file" if spec.file else "rows").problem(str(exc)))
    return tables, files


def _file_hash(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def mapping_files(path: str | Path) -> list[Path]:
    """Every file a mapping depends on (itself, its bases, its tables), for hot reload."""
    return load_mapping(path).files


def _setter(keys: tuple[str, ...]) -> Any:
    if len(keys) == 1:
        (k0,) = keys

        def put1(data: dict[str, Any], value: Any) -> None:
            data[k0] = value

        return put1
    if len(keys) == 2:
        k0, k1 = keys

        def put2(data: dict[str, Any], value: Any) -> None:
            data[k0][k1] = value

        return put2

    def put_deep(data: dict[str, Any], value: Any) -> None:
        holder = data
        for k in keys[:-1]:
            holder = holder[k]
        holder[keys[-1]] = value

    return put_deep


class _Builder:
    """Turns the merged specs into a CompiledMapping; problems accumulate in `problems`."""

    def __init__(self, path: Path, chain: list[_Layer]) -> None:
        self.path = path
        self.chain = chain
        top = chain[-1].spec
        self.input = next((layer.spec.input for layer in reversed(chain)
                           if layer.spec.input is not None), "hl7")
        self.iterate = next((layer.spec.iterate for layer in reversed(chain)
                             if layer.spec.iterate is not None), None)
        self.name = top.name or path.stem
        self.version = top.version
        self.problems: list[str] = []
        self.merged = _merge(chain)
        self.skeleton = model_skeleton(Charge)
        self.record_skeletons: dict[str, Any] = {}

    def build(self) -> CompiledMapping:
        tables, table_files = _load_tables(self.merged, self.problems)
        self._check_iterate()
        files = [layer.doc.path for layer in reversed(self.chain)] + table_files
        file_hash = _file_hash(files)
        mapping = self._compile(tables, files, file_hash, explain=False)
        # The explaining twin is compiled from the same specs and tables when first asked for.
        mapping.explainer = lambda: self._compile(tables, files, file_hash, explain=True)
        return mapping

    def _compile(self, tables: dict[str, Table], files: list[Path], file_hash: str,
                 explain: bool) -> CompiledMapping:
        compiler = Compiler(self.input, self.iterate, tables, list(self.merged.vars),
                            explain=explain)
        static_vars, line_vars = self._vars(compiler)
        static_fields, line_fields = self._fields(compiler)
        message_filters, early, late = [], [], []
        for spec, site in self.merged.filters:
            compiled = compiler.filter(spec, site)
            if compiled is None:
                continue
            if spec.drop == "message":
                message_filters.append(compiled)
            elif compiled.when is None:
                early.append(compiled)
            else:
                late.append(compiled)
        setters: dict[str, Any] = {}

        def setter_for(name: str, site: Site) -> Any:
            if name not in setters:
                setters[name] = self._rule_setter(compiler, name, site)
            return setters[name]

        rules = [r for r in (compiler.rule(spec, site, setter_for)
                             for spec, site in self.merged.rules) if r is not None]
        written = {name for rule in rules for name, *_ in rule.sets}
        if any(rule.add_modifier for rule in rules):
            written.add("procedure.modifiers")
        problems = self.problems + compiler.problems
        if problems:
            raise ConfigError(problems)
        mapping = CompiledMapping(
            name=self.name, version=self.version, file_hash=file_hash, path=self.path,
            input=self.input, iterate=self.iterate, files=files,
            static_vars=static_vars, line_vars=line_vars,
            static_fields=static_fields, line_fields=line_fields,
            message_filters=message_filters, early_filters=early, late_filters=late,
            rules=rules, skeleton=self.skeleton, build=model_builder(Charge),
            copy_data=data_copier(Charge),
            shared_parts=_shared_parts(static_fields + line_fields, written),
            setters={k: v for k, v in setters.items() if v is not None})
        if not explain:
            mapping.fast = generate(mapping)
        return mapping

    def _check_iterate(self) -> None:
        if self.iterate is None:
            return
        site = next(Site(layer.doc, ("iterate",)) for layer in reversed(self.chain)
                    if layer.spec.iterate is not None)
        if self.input == "fhir":
            if self.iterate not in accessors.FHIR_RESOURCES:
                self.problems.append(site.problem(
                    f"iterate: names a FHIR resource type, got {self.iterate!r}"
                    f"{did_you_mean(self.iterate, accessors.FHIR_RESOURCES)}"))
        elif self.iterate not in accessors.HL7_SEGMENTS and not self.iterate.startswith("Z"):
            self.problems.append(site.problem(
                f"iterate: names a segment (FT1), got {self.iterate!r}"
                f"{did_you_mean(self.iterate, accessors.HL7_SEGMENTS)}"))

    def _vars(self, compiler: Compiler) -> tuple[list[FieldPlan], list[FieldPlan]]:
        static: list[FieldPlan] = []
        per_line: list[FieldPlan] = []
        for name, (spec, site) in self.merged.vars.items():
            if not name.isidentifier() or name in _RESERVED_NAMES:
                self.problems.append(site.problem(
                    f"var name {name!r} must be a plain name (letters, digits, _) and not one "
                    f"of: {', '.join(sorted(_RESERVED_NAMES - accessors.FHIR_RESOURCES))}"))
                continue
            compiled = compiler.field(spec, None, name, site)
            if compiled is None:
                continue
            plan = FieldPlan(name, compiled.get, compiled.static, None, compiled.parts)
            (static if compiled.static else per_line).append(plan)
        return static, per_line

    def _fields(self, compiler: Compiler) -> tuple[list[FieldPlan], list[FieldPlan]]:
        static: list[FieldPlan] = []
        per_line: list[FieldPlan] = []
        for name, (spec, site) in self.merged.fields.items():
            resolved = compiler.target_of(name, site)
            if resolved is None:
                continue
            target, index, item = resolved
            plan: FieldPlan | None
            if isinstance(target, RecordTarget):
                plan = self._record_field(compiler, name, spec, site, target, index, item)
            else:
                compiled = compiler.field(spec, target, name, site)
                plan = None if compiled is None else FieldPlan(
                    name, compiled.get, compiled.static, _setter(target.keys), compiled.parts,
                    target.keys)
            if plan is not None:
                (static if plan.static else per_line).append(plan)
        return static, per_line

    def _record_skeleton(self, target: RecordTarget) -> Any:
        if target.name not in self.record_skeletons:
            self.record_skeletons[target.name] = model_skeleton(target.model)
        return self.record_skeletons[target.name]

    def _record_field(self, compiler: Compiler, name: str, spec: FieldSpec, site: Site,
                      target: RecordTarget, index: int | None, item: str | None
                      ) -> FieldPlan | None:
        skeleton = self._record_skeleton(target)
        if index is None:
            compiled = compiler.records(spec, target, site, skeleton)
            if compiled is None:
                return None
            return FieldPlan(name, compiled.get, compiled.static, _setter((target.name,)),
                             compiled.parts, (target.name,))
        item_target = target.fields[item or ""]
        scalar = compiler.field(spec, item_target, name, site)
        if scalar is None:
            return None
        put = _indexed_setter(target.name, index, item_target.keys, skeleton)
        return FieldPlan(name, scalar.get, scalar.static, put, scalar.parts)

    def _rule_setter(self, compiler: Compiler, name: str, site: Site) -> Any:
        resolved = compiler.target_of(name, site)
        if resolved is None:
            return None
        target, index, item = resolved
        if isinstance(target, RecordTarget):
            if index is None:
                compiler.problems.append(site.problem(
                    f"set: cannot replace all of {name}; set one field, e.g. {name}[0]."
                    f"{next(iter(target.fields))}"))
                return None
            item_target = target.fields[item or ""]
            put = _indexed_setter(target.name, index, item_target.keys,
                                  self._record_skeleton(target))
            return _converting(put, item_target, name)
        return _converting(_setter(target.keys), target, name)


def _shared_parts(plans: list[FieldPlan], written: set[str]) -> list[tuple[str, Any]]:
    """Charge parts that only message-level fields fill and no rule writes: each is built
    into its model once per message and shared by the message's charges."""
    per_line = {top_field(p.name) for p in plans if not p.static}
    per_line |= {top_field(name) for name in written}
    parts: list[tuple[str, Any]] = []
    for name, info in Charge.model_fields.items():
        if name in per_line:
            continue
        annotation = unwrap_optional(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            parts.append((name, model_builder(annotation)))
        elif typing.get_origin(annotation) is list:
            (item,) = typing.get_args(annotation)
            if isinstance(item, type) and issubclass(item, BaseModel):
                item_builder = model_builder(item)
                parts.append((name, lambda items, b=item_builder: [b(x) for x in items]))
    return parts


def _indexed_setter(list_name: str, index: int, keys: tuple[str, ...], skeleton: Any) -> Any:
    def put(data: dict[str, Any], value: Any) -> None:
        records = data[list_name]
        while len(records) <= index:
            records.append(skeleton())
        holder = records[index]
        for k in keys[:-1]:
            holder = holder[k]
        holder[keys[-1]] = value

    return put


def _converting(put: Any, target: Target, name: str) -> Any:
    """A rule's `set:` puts a value converted to the field's type; bad data -> a finding."""

    def set_value(data: dict[str, Any], value: Any, line: Line) -> None:
        try:
            if target.is_list:
                items = value if isinstance(value, list) else [value]
                converted: Any = [to_target(v, target.type) for v in items if v is not None]
            else:
                converted = to_target(value, target.type)
        except ValueError as exc:
            line.hold("mapping.invalid_value", name,
                      f"{name}: a rule set a value that is not a valid "
                      f"{type_word(target.type)} ({exc})")
            return
        put(data, converted)

    return set_value


def load_mapping(path: str | Path) -> CompiledMapping:
    """Load, validate and compile a mapping file (and its bases and tables).

    Raises ConfigError whose `problems` are `file:line:col: where: what` lines.
    """
    mapping_path = Path(path)
    if not mapping_path.is_file():
        raise ConfigError([f"{mapping_path}:1:1: (file): mapping file not found"])
    chain = _read_chain(mapping_path)
    return _Builder(mapping_path, chain).build()
