"""Code generation: one specialised Python function per HL7 mapping, built once at load.

The closures the compiler builds are the reference implementation. For the hot path this
module writes the same steps out as the source of one function (`apply_fast`): each HL7
field is read once per scope and its components split once, lookups are inlined dict reads,
and there are no per-field closure chains. The source only ever contains generated names;
every value from the mapping (segment names, tables, constants) is bound in the function's
namespace, so no mapping text becomes code. Anything the generator does not cover (FHIR,
`iterate:` absent, explain mode) keeps using the closures; a field shape it does not know
calls that field's reference getter. tests/mapping checks both paths give equal results.

What the reference makes for every line but rarely needs (the expression namespace, the
Line findings are recorded on, the LineSource, the group indexed by segment name) is made
where something reads it. The generator also knows what each variable may hold (`Kind`:
text, None, STOP, lists ...) and leaves out the tests that cannot fail.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import typing
from collections.abc import Callable, Collection
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from jinja2 import nodes as jnodes
from pydantic import BaseModel

from engine.charge import Charge
from engine.errors import MappingError
from engine.hl7.encoding import unescape
from engine.hl7.path import ALL, Path, compile_path
from engine.mapping.accessors import ItemScope, LineSource
from engine.mapping.build import copy_list, model_builder, simple_model, slot_setters
from engine.mapping.compiler import STOP, FieldParts, Line, _order_key, expression_failed
from engine.mapping.convert import _CENT, NORMALIZERS, TYPES, to_target
from engine.mapping.expressions import _ENV, expression_tree, get_attr, get_item
from engine.mapping.targets import top_field, unwrap_optional

if TYPE_CHECKING:
    from engine.mapping.mapping import CompiledMapping

__all__ = ["FastApply", "generate"]

FastApply = Callable[[Any, str], Any]
_LIST_CELL = re.compile(r"[\s;,]+")
# Normalizers written inline as a method call on the text.
_INLINE_STEPS = {NORMALIZERS["trim"]: "strip", NORMALIZERS["upper"]: "upper",
                 NORMALIZERS["lower"]: "lower"}
_NONE: list[Any] = []
# The findings of a message whose fields found nothing: only ever copied, never changed.
_NO_FINDINGS: list[Any] = []
# Normalizers that keep text text: a lookup after them can strip the key inline.
_TEXT_STEPS = {*_INLINE_STEPS, NORMALIZERS["strip_leading_zeros"]}
_serial = itertools.count()
# Jinja operators written as the same Python operator (operator.eq is `==` and so on).
_COMPARE_OPS = {"eq": "==", "ne": "!=", "lt": "<", "lteq": "<=", "gt": ">", "gteq": ">=",
                "in": "in", "notin": "not in"}
_BINARY_OPS = {jnodes.Add: "+", jnodes.Sub: "-", jnodes.Mul: "*", jnodes.Div: "/",
               jnodes.FloorDiv: "//", jnodes.Mod: "%"}


class _Unsupported(Exception):
    """The mapping uses something the generator does not write out; keep the closures."""


class _Ctx:
    """Where paths are read: the message, one FT1 line, or one record of an `each:`.

    `obj` is the variable naming the scope object (msg, ls, or an ItemScope variable, the
    last two made on first use); a record's `item_var` holds its segment, named
    `item_segment`.
    """

    def __init__(self, kind: str, obj: str, parent: _Ctx | None = None,
                 item_segment: str = "", item_var: str = "") -> None:
        self.kind = kind
        self.obj = obj
        self.parent = parent
        self.item_segment = item_segment
        self.item_var = item_var
        self.serial = next(_serial)


class _Writer:
    """Accumulates source lines, bound names and values already computed in this block."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 1
        self.names: dict[str, Any] = {}
        self._ids: dict[int, str] = {}
        self._counter = itertools.count()
        self.cache: list[dict[Any, str]] = [{}]

    def emit(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def bind(self, value: Any, hint: str = "k") -> str:
        """A name in the generated function's namespace holding `value`."""
        found = self._ids.get(id(value))
        if found is not None and self.names[found] is value:
            return found
        name = f"{hint}{next(self._counter)}"
        self.names[name] = value
        self._ids[id(value)] = name
        return name

    def var(self, hint: str = "v") -> str:
        return f"_{hint}{next(self._counter)}"

    def cached(self, key: Any) -> str | None:
        for level in reversed(self.cache):
            if key in level:
                return level[key]
        return None

    def remember(self, key: Any, name: str) -> None:
        self.cache[-1][key] = name

    def block(self) -> _Block:
        return _Block(self)


class _Block:
    """An indented block: values computed inside it are forgotten when it ends."""

    def __init__(self, writer: _Writer) -> None:
        self.writer = writer

    def __enter__(self) -> None:
        self.writer.depth += 1
        self.writer.cache.append({})

    def __exit__(self, *_exc: object) -> None:
        self.writer.depth -= 1
        self.writer.cache.pop()


class _NeedsNamespace(Exception):
    """A line reads a closure that reads the namespace: make it for every line."""


class _Generator:
    """Writes `apply_fast(msg, channel)` for one compiled HL7 mapping.

    The expression namespace of a line (`ns`) is made only where something reads it (a
    rule that runs, a filter's reason) unless `eager_ns`: then, as in the reference, every
    line makes one, for the closures a line calls that read it.
    """

    def __init__(self, mapping: CompiledMapping, eager_ns: bool = False) -> None:
        self.m = mapping
        self.w = _Writer()
        self.eager_ns = eager_ns
        self.in_line = False
        self.has_data = False
        self.line_ctx = _Ctx("line", "ls")
        # Line var name -> the local holding its value (None for STOP), once computed.
        self.line_vars: dict[str, str] = {}
        # The charge parts that are models before a line's assembly (built once per
        # message).
        # (dict variable, keys ...) -> the local holding that nested dict.
        self.holders: dict[tuple[str, ...], str] = {}
        self.built: set[str] = set()
        # What the variable a field was computed into may hold (not listed: anything).
        self.kinds: dict[str, Kind] = {}
        # The last field the mapping reads in each segment: split fields are padded to it.
        paths = _paths(mapping)
        self.widths = _widths(paths)
        # (segment, field) of which some path reads a component after the first.
        self.components = {(p.seg, p.field) for p in paths if p.comp}
        # Names the message's namespace holds beside the reader and control id.
        self.message_names = {"message_type", *(p.name for p in mapping.static_vars)}

    # -- reading HL7 values ---------------------------------------------------------------

    def _segments(self, ctx: _Ctx, seg: str) -> str:
        """A variable holding the segment list a path on `seg` reads in `ctx` (the
        message or a line: a record's own segment is read directly)."""
        key = ("segs", ctx.serial, seg)
        found = self.w.cached(key)
        if found is not None:
            return found
        name = self.w.var("sg")
        seg_name = self.w.bind(seg, "n")
        if ctx.kind == "msg":
            self.w.emit(f"{name} = _bn.get({seg_name}, _NONE)")
        else:
            self.w.emit(f"{name} = {self._own()}.get({seg_name}) or _bn.get({seg_name}, _NONE)")
        self.w.remember(key, name)
        return name

    def _fields(self, ctx: _Ctx, seg: str) -> tuple[str, str, str]:
        """(segment var or 'None', field list var, dirty flag var) of the first `seg`
        segment in `ctx`. The flag is false when the segment holds no sub-component
        separator, escape or explicit null: then none of its values needs `_finish_value`."""
        owner = self._owner(ctx, seg)
        key = ("fields", owner.serial, seg)
        found = self.w.cached(key)
        if found is not None:
            first, fields, dirty = found.split(",")
            return first, fields, dirty
        fields, dirty = self.w.var("f"), self.w.var("dy")
        pad = self.w.bind([""] * (self.widths.get(seg, 0) + 1), "pad")
        if owner.kind == "item" or (owner.kind == "line" and seg == self.m.iterate):
            # A record's segment, or a line's own `iterate` segment (its anchor: the group
            # starts with it), is there: no list to look in.
            first = owner.item_var if owner.kind == "item" else "_anchor"
            self._split(first, seg, fields, pad)
            self.w.emit(f"{dirty} = {self._dirty_test(first, seg, fields)}")
        else:
            segs = self._segments(owner, seg)
            first = self.w.var("s")
            self.w.emit(f"{first} = {segs}[0] if {segs} else None")
            self.w.emit(f"if {first} is not None:")
            with self.w.block():
                self._split(first, seg, fields, pad)
                self.w.emit(f"{dirty} = {self._dirty_test(first, seg, fields)}")
            self.w.emit("else:")
            with self.w.block():
                self.w.emit(f"{fields}, {dirty} = {pad}, False")
        self.w.remember(key, f"{first},{fields},{dirty}")
        return first, fields, dirty

    def _split(self, segment: str, name: str, fields: str, pad: str) -> None:
        """`fields` = the segment's fields, split on first use as Segment._split does
        (written out but for MSH, whose separator is MSH-1), and padded with '' up to the
        last field the mapping reads there, so that a read needs no length test."""
        w = self.w
        w.emit(f"{fields} = {segment}._fields")
        w.emit(f"if {fields} is None:")
        with w.block():
            if name == "MSH":
                w.emit(f"{fields} = {segment}._split()")
            else:
                w.emit(f"{fields} = {segment}._fields = {segment}.raw.split(_FS)")
        w.emit(f"if len({fields}) <= {self.widths.get(name, 0)}:")
        with w.block():
            w.emit(f"{fields} = {fields} + {pad}")

    def _dirty_test(self, segment: str, name: str, fields: str) -> str:
        """Source telling whether the segment's values may need `_finish_value`. MSH-2
        holds every delimiter: for MSH the test starts at MSH-3 ('MSH|' MSH-2 '|')."""
        raw = segment + ".raw"
        if name == "MSH":
            self.w.emit(f"_tail = {raw}[len({fields}[2]) + 5:]")
            raw = "_tail"
        return f"_S in {raw} or _E in {raw} or '\"\"' in {raw}"

    def _path_value(self, ctx: _Ctx, path: Path) -> str:
        """A variable holding `path.first` in `ctx` (decoded text or None)."""
        key = ("value", self._owner(ctx, path.seg).serial, path.text.strip(), ctx.serial)
        found = self.w.cached(key)
        if found is not None:
            return found
        w = self.w
        out = w.var()
        if path.seg_index != 0 or path.rep == ALL or (path.seg == "MSH" and path.field <= 2):
            bound = w.bind(path, "p")
            w.emit(f"{out} = {bound}.first({self._obj(ctx)})")
            w.remember(key, out)
            return out
        first, raw, dirty = self._raw(ctx, path)
        comp = path.comp
        if comp == 0 and path.rep == 0 and (path.seg, path.field) not in self.components:
            # Only the first component of this field is ever read: cut it, no list.
            w.emit(f"{out} = {raw}.split(_R, 1)[0] if _R in {raw} else {raw}")
            w.emit(f"if _C in {out}:")
            with w.block():
                w.emit(f"{out} = {out}[:{out}.index(_C)]")
            w.emit(f"{out} = {out} or None")
        else:
            comps = self._components(key[1], path, raw)
            # Beyond the last component reads '' and so ends as None, like no component.
            if comp == 0:
                w.emit(f"{out} = ({comps}[0] if {comps} else None) or None")
            else:
                w.emit(f"{out} = ({comps}[{comp}] if {comp} < len({comps}) else None) "
                       "or None")
        # Sub-components, the explicit null and escapes are rare: one helper does them.
        if path.sub:
            w.emit(f"if {out} is not None:")
            with w.block():
                w.emit(f"{out} = _finish_value({out}, {path.sub}, _enc, {first}.codec)")
        else:
            w.emit(f"if {dirty} and {out} is not None and "
                   f"(_S in {out} or _E in {out} or {out} == '\"\"'):")
            with w.block():
                w.emit(f"{out} = _finish_value({out}, 0, _enc, {first}.codec)")
        w.remember(key, out)
        return out

    def _components(self, owner: int, path: Path, raw: str) -> str:
        """A variable with the components of the path's repetition ('' split: ['']),
        or () when the repetition is absent; computed once per field and repetition."""
        w = self.w
        comps_key = ("comps", owner, path.seg, path.field, path.rep)
        comps = w.cached(comps_key)
        if comps is not None:
            return comps
        comps = w.var("cs")
        if path.rep == 0:
            w.emit(f"{comps} = ({raw}.split(_R)[0] if _R in {raw} else {raw}).split(_C) "
                   f"if {raw} else ()")
        else:
            reps = w.var("rs")
            w.emit(f"{reps} = {raw}.split(_R) if {raw} and _R in {raw} else ()")
            w.emit(f"{comps} = {reps}[{path.rep}].split(_C) if {path.rep} < len({reps}) "
                   "else ()")
        w.remember(comps_key, comps)
        return comps

    def _raw(self, ctx: _Ctx, path: Path) -> tuple[str, str, str]:
        """(segment var, variable with the path's whole field as sent, dirty flag)."""
        first, fields, dirty = self._fields(ctx, path.seg)
        number = path.field
        raw_key = ("raw", self._owner(ctx, path.seg).serial, path.seg, number)
        raw = self.w.cached(raw_key)
        if raw is None:
            raw = self.w.var("r")
            if number <= self.widths.get(path.seg, 0):
                self.w.emit(f"{raw} = {fields}[{number}]")
            else:
                self.w.emit(f"{raw} = {fields}[{number}] if {number} < len({fields}) else ''")
            self.w.remember(raw_key, raw)
        return first, raw, dirty

    @staticmethod
    def _inline_items(path: Path) -> bool:
        """Whether the values of the path are read inline: `SEG-n[*].c` in a loop of its
        own, a single repetition as one value (both on the first segment)."""
        return path.seg_index == 0 and not (path.seg == "MSH" and path.field <= 2)

    def _all(self, ctx: _Ctx, path: Path, out: str,
             take: Callable[[], None] | None = None) -> None:
        """`out = path.all(scope)`: for `SEG-n[*].c` on the first segment, written inline;
        there `take` may write what becomes of each value (`_rv`) instead of appending it."""
        w = self.w
        if path.seg_index != 0 or (path.seg == "MSH" and path.field <= 2):
            w.emit(f"{out} = {w.bind(path, 'p')}.all({self._obj(ctx)})")
            return
        if path.rep != ALL:
            # One repetition of the first segment: `all` is `first` as a list (and the
            # value is often read already for another field).
            value = self._path_value(ctx, path)
            w.emit(f"{out} = [{value}] if {value} is not None else []")
            return
        first, raw, dirty = self._raw(ctx, path)
        w.emit(f"{out} = []")
        w.emit(f"if {raw}:")
        with w.block():
            w.emit(f"for _rv in ({raw}.split(_R) if _R in {raw} else ({raw},)):")
            with w.block():
                w.emit("if _C in _rv:")
                with w.block():
                    w.emit("_cl = _rv.split(_C)")
                    w.emit(f"_rv = _cl[{path.comp}] if {path.comp} < len(_cl) else ''")
                if path.comp:
                    w.emit("else:")
                    with w.block():
                        w.emit("continue")
                w.emit("if not _rv:")
                with w.block():
                    w.emit("continue")
                w.emit(f"if {dirty} and (_S in _rv or _E in _rv or _rv == '\"\"'):")
                with w.block():
                    w.emit(f"_rv = _finish_value(_rv, {path.sub}, _enc, {first}.codec)")
                    w.emit("if _rv is None:")
                    with w.block():
                        w.emit("continue")
                if path.sub:
                    w.emit("else:")
                    with w.block():
                        w.emit("continue")
                if take is None:
                    w.emit(f"{out}.append(_rv)")
                else:
                    take()

    def _base_ns(self) -> str:
        """`base_ns`, the message's expression namespace, made on first use."""
        self.w.emit("if base_ns is None:")
        with self.w.block():
            self.w.emit("base_ns = {'hl7': msg.get, 'control_id': control_id, "
                        "'message_type': msg.message_type}")
        return "base_ns"

    def _own(self) -> str:
        """`_own`, the line's group indexed by segment name, made on first use."""
        self.w.emit("if _own is None:")
        with self.w.block():
            self.w.emit("_own = _by_name(_group)")
        return "_own"

    def _line(self) -> str:
        """`line`, the Line closures take (the message's, or within a line the line's),
        made on first use."""
        self.w.emit("if line is None:")
        with self.w.block():
            if self.in_line:
                self.w.emit(f"line = _new_line(data, {'ns' if self.eager_ns else 'None'}, "
                            "static_findings)")
            else:
                self.w.emit(f"line = _Line({{}}, {self._base_ns()}, False)")
        return "line"

    def _obj(self, ctx: _Ctx) -> str:
        """The expression naming the scope object. A line's LineSource and a record's
        ItemScope are made on first use: most values are read inline without them."""
        if ctx.kind == "line":
            self.w.emit("if ls is None:")
            with self.w.block():
                self.w.emit(f"ls = _line_source({self._own()}, msg)")
        elif ctx.kind == "item":
            assert ctx.parent is not None
            parent = self._obj(ctx.parent)
            self.w.emit(f"if {ctx.obj} is None:")
            with self.w.block():
                self.w.emit(f"{ctx.obj} = _ItemScope({ctx.item_var}, {parent})")
        return ctx.obj

    def _owner(self, ctx: _Ctx, seg: str) -> _Ctx:
        owner = ctx
        while owner.kind == "item" and seg != owner.item_segment:
            assert owner.parent is not None
            owner = owner.parent
        return owner

    def _read(self, ctx: _Ctx, parts: FieldParts) -> str:
        """A variable holding what the field's accessor returns."""
        paths = parts.paths
        out = self.w.var()
        if parts.is_list:
            # Many values: every value of the first alternative that has any.
            self._all(ctx, paths[0], out)
            for path in paths[1:]:
                self.w.emit(f"if not {out}:")
                with self.w.block():
                    self._all(ctx, path, out)
            return out
        if len(paths) == 1:
            return self._path_value(ctx, paths[0])
        self._first_of(ctx, paths, out)
        return out

    def _first_of(self, ctx: _Ctx, paths: list[Path], out: str) -> None:
        """`out` = the first non-empty value of the alternatives; a later one is read only
        when the earlier ones are empty."""
        self.w.emit(f"{out} = {self._path_value(ctx, paths[0])}")
        if len(paths) > 1:
            self.w.emit(f"if {out} is None:")
            with self.w.block():
                self._first_of(ctx, paths[1:], out)

    # -- fields ------------------------------------------------------------------------

    def value(self, ctx: _Ctx, parts: FieldParts | None) -> str:
        """Emit code computing the field; returns the variable (value, None or STOP)."""
        if parts is None:
            raise _Unsupported("a field without parts")
        if parts.kind == "field":
            return self._field(ctx, parts)
        if parts.kind == "each":
            return self._each(ctx, parts)
        if parts.kind == "values":
            return self._values(ctx, parts)
        return self._opaque(ctx, parts)

    def _opaque(self, ctx: _Ctx, parts: FieldParts) -> str:
        self._needs_ns()
        out = self.w.var()
        self.w.emit(f"{out} = {self.w.bind(parts.get, 'g')}({self._obj(ctx)}, {self._line()})")
        return out

    def _source(self, ctx: _Ctx, parts: FieldParts) -> tuple[str, Kind, bool]:
        """(variable with the raw value, what it may hold, whether it is a list of texts)."""
        if parts.read is not None:
            if not parts.paths:
                raise _Unsupported("path without compiled HL7 paths")
            if parts.is_list:
                return self._read(ctx, parts), frozenset({"texts"}), True
            return self._read(ctx, parts), TEXT - {"str"}, False
        out = self.w.var()
        if parts.raw is None:
            self.w.emit(f"{out} = None")
            return out, frozenset({"none"}), False
        if hasattr(parts.raw, "constant"):
            constant = parts.raw.constant
            self.w.emit(f"{out} = {self._constant(constant)}")
            return out, frozenset({_kind_of(constant)}), False
        tree = expression_tree(parts.expression) if parts.expression is not None else None
        inline = None
        if tree is not None and self.in_line:
            try:
                inline = self._expr(tree)
            except _Unsupported:
                inline = None
        if inline is None:
            self._needs_ns()
            self.w.emit(f"{out} = {self.w.bind(parts.raw, 'x')}({self._obj(ctx)}, "
                        f"{self._line()})")
            return out, ANY, False
        # compiler `_expr_getter`: an expression that raises holds the charge.
        self.w.emit("try:")
        with self.w.block():
            self.w.emit(f"{out} = {inline}")
        self.w.emit("except Exception as _exc:")
        with self.w.block():
            self.w.emit(f"_expression_failed({self._line()}, {self.w.bind(parts.name, 'n')}, "
                        "_exc)")
            self.w.emit(f"{out} = STOP")
        return out, ANY, False

    def _steps(self, var: str, parts: FieldParts, kind: Kind) -> Kind:
        """Normalize `var` in place; returns what it may hold then."""
        if not parts.steps:
            return kind
        text = var
        is_text = kind <= TEXT - {"none"}
        for step in parts.steps:
            # str.strip and friends as method calls, on what is surely text.
            method = _INLINE_STEPS.get(step) if is_text else None
            text = f"{text}.{method}()" if method is not None \
                else f"{self.w.bind(step, 'st')}({text})"
            is_text = is_text and step in _TEXT_STEPS
        self.w.emit(f"{var} = {text}")
        return frozenset({"str"}) if is_text else ANY - {"stop"}  # trimming can leave ''

    def _lookup(self, var: str, parts: FieldParts, kind: Kind) -> Kind:
        """`var = lookup(var, line)`: a hit inlined, a miss through the compiled lookup;
        returns what `var` may hold then (None, text, the table's cells, STOP ...)."""
        lookup = parts.lookup
        info = getattr(lookup, "parts", None)
        bound = self.w.bind(lookup, "lk")
        if info is None or not kind <= TEXT - {"none"}:
            self.w.emit(f"{var} = {bound}({var}, {self._line()})")
            return ANY
        rows, column, policy, default, is_list = info
        row = self.w.var("row")
        # A value just trimmed is its own key.
        key = var if parts.steps and parts.steps[-1] is NORMALIZERS["trim"] else f"{var}.strip()"
        self.w.emit(f"{row} = {self.w.bind(rows, 't')}.get({key})")
        self.w.emit(f"if {row} is not None:")
        cells = [row.get(column) for row in rows.values()]
        with self.w.block():
            self.w.emit(f"{var} = {row}.get({self.w.bind(column, 'n')})")
            if is_list and any(isinstance(cell, str) for cell in cells):
                self.w.emit(f"if isinstance({var}, str):")
                with self.w.block():
                    self.w.emit(f"{var} = [_x for _x in _LIST_CELL.split({var}) if _x]")
                cells = [[x for x in _LIST_CELL.split(cell) if x] if isinstance(cell, str)
                         else cell for cell in cells]
        if policy == "default":
            self.w.emit("else:")
            with self.w.block():
                self.w.emit(f"{var} = {self._constant(default)}")
            cells.append(default)
        elif policy == "keep":
            cells.append("key")
        else:
            # hold or fail: the compiled lookup records the finding (or raises).
            self.w.emit("else:")
            with self.w.block():
                self.w.emit(f"{var} = {bound}({var}, {self._line()})")
            return frozenset({_kind_of(cell) for cell in cells} | {"stop"})
        return frozenset(_kind_of(cell) for cell in cells)

    def _constant(self, value: Any) -> str:
        return "None" if value is None else self.w.bind(value, "c")

    @staticmethod
    def _converts(parts: FieldParts, kind: Kind) -> bool:
        """Whether converting a value of this kind does anything (a string converter on
        text does not)."""
        if parts.convert is None:
            return False
        return not (parts.convert is TYPES["string"] and parts.retarget is None
                    and kind <= TEXT - {"none"})

    def _convert(self, var: str, parts: FieldParts, kind: Kind) -> Kind:
        """Convert in place; a ValueError holds the charge and makes the value STOP.
        Returns what `var` may hold then."""
        if not self._converts(parts, kind):
            return kind
        self.w.emit("try:")
        with self.w.block():
            self._convert_value(var, parts.convert, kind <= TEXT - {"none"})
            if parts.retarget is not None:
                self.w.emit(f"{var} = _to_target({var}, {self.w.bind(parts.retarget, 'n')})")
        self.w.emit("except ValueError as _exc:")
        with self.w.block():
            self.w.emit(f"{self.w.bind(parts.bad, 'bad')}({self._line()}, {var}, _exc)")
            self.w.emit(f"{var} = STOP")
        return _converted_kind(parts, kind) | {"stop"}

    def _convert_value(self, var: str, convert: Any, text: bool) -> None:
        """`var = convert(var)`, the common text shapes written inline: the converter itself
        runs only for other values (and raises the ValueError the caller reports). `text`
        says `var` surely holds a str."""
        cv = self.w.bind(convert, "cv")
        w = self.w
        if convert is TYPES["string"]:
            w.emit(f"if type({var}) is not str:")
            with w.block():
                w.emit(f"{var} = {cv}({var})")
        elif convert is TYPES["code"] and text:
            w.emit(f"{var} = {var}.strip().upper()")  # _code on text
        elif convert is TYPES["date"]:
            # Dates repeat across lines and messages; a date object is immutable. Only
            # _date's YYYYMMDD branch is written inline and remembered (surrounding blanks
            # make it take the general one).
            is_str = "" if text else f"type({var}) is str and "
            w.emit(f"_known = _DATES.get({var})" if text
                   else f"_known = _DATES.get({var}) if type({var}) is str else None")
            w.emit("if _known is not None:")
            with w.block():
                w.emit(f"{var} = _known")
            w.emit(f"elif {is_str}len({var}) == 8 and {var}.isdigit():")
            with w.block():
                w.emit(f"_known = _date(int({var}[:4]), int({var}[4:6]), int({var}[6:8]))")
                w.emit(f"_remember(_DATES, {var}, _known)")
                w.emit(f"{var} = _known")
            w.emit("else:")
            with w.block():
                w.emit(f"{var} = {cv}({var})")
        elif convert is TYPES["decimal"] or convert is TYPES["money"]:
            self._decimal_value(var, convert is TYPES["money"], cv, text)
        else:
            w.emit(f"{var} = {cv}({var})")

    def _decimal_value(self, var: str, money: bool, cv: str, text: bool) -> None:
        """`var = cv(var)` for decimal and money: a text that converted before gives the
        same (immutable) Decimal again; a new text is converted inline, the converter runs
        only for what the inline conversion refuses (and raises the ValueError)."""
        w = self.w
        number = (f"{var}.strip().lstrip('$').strip().replace(',', '')" if money
                  else f"{var}.strip().replace(',', '')")
        known = "_MONEY" if money else "_DECIMALS"
        w.emit(f"_dec = {known}.get({var})" if text
               else f"_dec = {known}.get({var}) if type({var}) is str else None")
        w.emit("if _dec is not None:")
        with w.block():
            w.emit(f"{var} = _dec")
        w.emit("else:")
        with w.block():
            if not text:
                w.emit(f"if type({var}) is str:")
                w.depth += 1
            w.emit("try:")
            with w.block():
                w.emit(f"_dec = _Decimal({number})")
                if money:
                    # Too large an amount does not quantize: the converter reports it.
                    w.emit("_dec = _dec.quantize(_CENT) if _dec.is_finite() else None")
            w.emit("except _InvalidOperation:")
            with w.block():
                w.emit("_dec = None")
            # Only finite values are remembered.
            w.emit("if _dec is not None and _dec.is_finite():")
            with w.block():
                w.emit(f"_remember({known}, {var}, _dec)")
            w.emit("else:")
            with w.block():
                w.emit("_dec = None")
            if not text:
                w.depth -= 1
            w.emit(f"{var} = _dec if _dec is not None else {cv}({var})")

    def _field(self, ctx: _Ctx, parts: FieldParts) -> str:
        steps, lookup, convert = parts.steps, parts.lookup, parts.convert
        fallback, default, is_list = parts.fallback, parts.default, parts.is_list
        if convert is not None and parts.bad is None:
            raise _Unsupported("converter without its error reporter")
        if not steps and lookup is None and convert is None and fallback is None \
                and default is None and not is_list:
            # A plain path, constant or expression.
            source, kind, _ = self._source(ctx, parts)
            self.kinds[source] = kind
            return source
        if parts.read is None or fallback is not None or is_list:
            return self._general(ctx, parts)
        # The scalar shapes of compiler._scalar_getter: read -> steps -> lookup -> convert,
        # and the default for a value that is empty before or after the lookup.
        w = self.w
        source, kind, _ = self._source(ctx, parts)
        out = w.var()
        d = self._constant(default)
        w.emit(f"{out} = {source}")
        w.emit(f"if {_empty_test(out, kind)}:")
        with w.block():
            w.emit(f"{out} = {d}")
        w.emit("else:")
        with w.block():
            before = len(w.lines)
            kind = self._steps(out, parts, kind - {"none", "str"})
            if lookup is not None:
                kind = self._lookup(out, parts, kind)
            kind = self._after_lookup(out, parts, kind, d)
            if len(w.lines) == before:
                w.emit("pass")
        self.kinds[out] = kind | {_kind_of(default)}
        return out

    def _after_lookup(self, out: str, parts: FieldParts, kind: Kind, default: str) -> Kind:
        """Unless STOP: a list's first item, the default for an empty value, else convert.
        Returns what `out` may hold then."""
        w = self.w
        value = kind - {"stop"}
        has_list = bool(value & LISTS)
        if has_list:
            value = (value - LISTS) | _item_kind(value) | {"none"}
        checked = parts.lookup is not None or bool(parts.steps)
        empty = _empty_test(out, value) if checked else "False"
        converts = self._converts(parts, value - {"none", "str"})
        if not (has_list or empty != "False" or converts):
            return kind
        guarded = "stop" in kind
        if guarded:
            w.emit(f"if {out} is not STOP:")
            w.depth += 1
        if has_list:
            w.emit(f"if isinstance({out}, list):")
            with w.block():
                w.emit(f"{out} = {out}[0] if {out} else None")
        result = kind & {"stop"}
        if empty != "False":
            w.emit(f"if {empty}:")
            with w.block():
                w.emit(f"{out} = {default}")
            result |= {_kind_of(parts.default)}
            value -= {"none", "str"}
            if converts:
                w.emit("else:")
                with w.block():
                    value = self._convert(out, parts, value)
        elif converts:
            value = self._convert(out, parts, value)
        if guarded:
            w.depth -= 1
        return result | value

    def _one(self, var: str, parts: FieldParts, kind: Kind) -> Kind:
        """compiler `one` on a value that is not None or '': steps, lookup (list cells
        converted item by item), convert. Returns what `var` may hold then."""
        w = self.w
        kind = self._steps(var, parts, kind)
        if parts.lookup is None:
            return self._convert(var, parts, kind)
        kind = self._lookup(var, parts, kind)
        converting = kind - {"none", "stop"}
        items = _item_kind(converting)
        convert_items = bool(items) and self._converts(parts, items)
        if not self._converts(parts, converting - LISTS) and not convert_items:
            return kind
        checks = [f"{var} is not None"] if "none" in kind else []
        checks += [f"{var} is not STOP"] if "stop" in kind else []
        if checks:
            w.emit(f"if {' and '.join(checks)}:")
            w.depth += 1
        if convert_items:
            w.emit(f"if isinstance({var}, list):")
            with w.block():
                converted = w.var("cl")
                w.emit(f"{converted} = []")
                w.emit(f"for _i in {var}:")
                with w.block():
                    self._convert("_i", parts, items)
                    w.emit("if _i is not STOP:")
                    with w.block():
                        w.emit(f"{converted}.append(_i)")
                w.emit(f"{var} = {converted}")
            rest = converting - LISTS
            after: Kind = frozenset({"list"})
            if rest and self._converts(parts, rest):
                w.emit("else:")
                with w.block():
                    after |= self._convert(var, parts, rest)
            else:
                after |= rest
        else:
            after = (converting & LISTS) | self._convert(var, parts, converting - LISTS)
        if checks:
            w.depth -= 1
        return after | (kind & {"none", "stop"})

    def _general(self, ctx: _Ctx, parts: FieldParts) -> str:
        """compiler `_field_getter.get`: any field with a fallback, or a list field. The
        fallback (or default) applies when the value ends up empty (None, '', no items)."""
        w = self.w
        if parts.is_list and parts.read is not None and len(parts.paths) == 1 \
                and self._inline_items(parts.paths[0]):
            out = self._read_items(ctx, parts)
            kind = self.kinds[out]
            empty = f"not {out}"  # no items
        elif parts.is_list:
            source, kind, many = self._source(ctx, parts)
            out = w.var()
            w.emit(f"{out} = {source}")
            # The items (none empty), or what the source held when it was empty or STOP.
            kind = self._items(out, parts, kind, many) | (kind & {"stop"})
            empty = f"not {out}"  # no items
        else:
            source, kind, many = self._source(ctx, parts)
            out = w.var()
            w.emit(f"{out} = {source}")
            kind = self._scalar(out, parts, kind)
            empty = _empty_test(out, kind)
            kind -= {"none", "str"}
        if empty != "False":
            w.emit(f"if {empty}:")
            with w.block():
                kind |= self._fallback(ctx, parts, out)
        self.kinds[out] = kind
        return out

    def _fallback(self, ctx: _Ctx, parts: FieldParts, out: str) -> Kind:
        """`out` = the `else:` value (the default when it is None), or the default;
        returns what `out` may hold then."""
        w = self.w
        default = self._constant(parts.default)
        if parts.fallback is None:
            w.emit(f"{out} = {default}")
            return frozenset({_kind_of(parts.default)})
        other = self.value(ctx, parts.fallback)
        kind = self.kinds.get(other, ANY)
        w.emit(f"{out} = {other}")
        if parts.default is None or "none" not in kind:
            return kind
        w.emit(f"if {out} is None:")
        with w.block():
            w.emit(f"{out} = {default}")
        return (kind - {"none"}) | {_kind_of(parts.default)}

    def _scalar(self, out: str, parts: FieldParts, kind: Kind) -> Kind:
        """The value of a scalar field with a fallback, processed when it is not empty;
        returns what `out` may hold then (empty meaning: use the fallback)."""
        w = self.w
        start = len(w.lines)
        present = _present_test(out, kind)
        if present:
            w.emit(f"if {present}:")
            w.depth += 1
        value = kind - {"stop", "none", "str"}
        has_list = bool(value & LISTS)
        if has_list:
            w.emit(f"if isinstance({out}, list):")
            with w.block():
                w.emit(f"{out} = {out}[0] if {out} else None")
            w.emit(f"if {out} is not None:")
            w.depth += 1
            value = (value - LISTS) | (_item_kind(value) - {"none"})
        before = len(w.lines)
        after = self._one(out, parts, value)
        if len(w.lines) == before:
            if has_list:
                w.emit("pass")
            else:
                del w.lines[start:]  # nothing to do with the value: no test either
        if has_list:
            w.depth -= 1
            after |= {"none"}
        if present:
            w.depth -= 1
        return after | (kind & {"stop", "none", "str"})

    def _read_items(self, ctx: _Ctx, parts: FieldParts,
                    record: Callable[[str], str] | None = None) -> str:
        """A list field read from one `[*]` path: each value processed (and with `record`,
        made into a record) as it is read, the empty ones left out. Returns the variable
        with the list; its kind says what the items are."""
        out = self.w.var()
        after: Kind = frozenset()

        def take() -> None:
            nonlocal after
            after = self._one("_rv", parts, frozenset({"text"}))
            self._append_item(out, "_rv", after, record)

        path = parts.paths[0]
        if path.rep == ALL:
            self._all(ctx, path, out, take)
        else:
            # `all` of one repetition is its first value, if any.
            value = self._path_value(ctx, path)
            self.w.emit(f"{out} = []")
            self.w.emit(f"if {value} is not None:")
            with self.w.block():
                self.w.emit(f"_rv = {value}")
                take()
        texts = record is None and after - {"stop", "none", "str", "texts"} <= {"text"}
        self.kinds[out] = frozenset({"texts" if texts else "list"})
        return out

    def _append_item(self, items: str, var: str, kind: Kind,
                     record: Callable[[str], str] | None = None) -> None:
        """compiler `get` for a list field: a list result adds its non-empty items, any
        other result itself unless empty or STOP."""
        w = self.w
        if kind & LISTS:
            w.emit(f"if isinstance({var}, list):")
            with w.block():
                if record is not None:
                    w.emit(f"for _r in {var}:")
                    with w.block():
                        w.emit("if _r is not None and _r != '':")
                        with w.block():
                            w.emit(f"{items}.append({record('_r')})")
                elif "list" in kind:
                    w.emit(f"{items} += [_r for _r in {var} if _r is not None and _r != '']")
                else:
                    w.emit(f"{items} += {var}  # texts, none empty")
            if not kind - LISTS - {"none", "stop"}:
                return  # no other value is ever taken
            w.emit(f"elif {var} is not None and {var} is not STOP and {var} != '':")
        else:
            w.emit(f"if {_present_test(var, kind) or 'True'}:")
        with w.block():
            w.emit(f"{items}.append({record(var) if record is not None else var})")

    def _items(self, out: str, parts: FieldParts, kind: Kind, many: bool) -> Kind:
        """The values of a list field, each processed, the empty ones left out (an empty
        list then means: use the fallback). Returns what the list may be."""
        w = self.w
        items = w.var("items")
        condition = f"{out} is not STOP and {out}" if "stop" in kind else out
        w.emit(f"if {condition}:")
        with w.block():
            w.emit(f"{items} = []")
            source = out if many else f"({out} if isinstance({out}, list) else [{out}])"
            w.emit(f"for _item in {source}:")
            with w.block():
                item = frozenset({"text"}) if many else ANY - {"stop"}
                after = self._one("_item", parts, item)
                self._append_item(items, "_item", after)
            w.emit(f"{out} = {items}")
        texts = after - {"stop", "none", "str", "texts"} <= {"text"}
        return frozenset({"texts" if texts else "list"})

    def _values(self, ctx: _Ctx, parts: FieldParts) -> str:
        """compiler `records` from a plain list: one record per value (diagnosis codes)."""
        assert parts.inner is not None and parts.skeleton is not None
        inner, w = parts.inner, self.w
        skeleton = parts.skeleton()

        def record(value: str) -> str:
            return self._literal(skeleton, {parts.key: value})

        if inner.kind == "field" and inner.is_list and inner.read is not None \
                and len(inner.paths) == 1 and self._inline_items(inner.paths[0]) \
                and inner.fallback is None and inner.default is None:
            # Records made as the values are read: no values, no records.
            out = self._read_items(ctx, inner, record)
            w.emit(f"if not {out}:")
        else:
            values = self.value(ctx, inner)
            out = w.var()
            stop = f" and {values} is not STOP" if "stop" in self.kinds.get(values, ANY) else ""
            w.emit(f"if {values}{stop}:")
            with w.block():
                w.emit(f"{out} = []")
                w.emit(f"for _value in {values}:")
                with w.block():
                    w.emit(f"{out}.append({record('_value')})")
            w.emit("else:")
        kind: Kind = frozenset({"list"})
        with w.block():
            if parts.fallback is not None:
                other = self.value(ctx, parts.fallback)
                w.emit(f"{out} = {other}")
                kind |= self.kinds.get(other, ANY)
            else:
                w.emit(f"{out} = None")
                kind |= {"none"}
        self.kinds[out] = kind
        return out


    def _each(self, ctx: _Ctx, parts: FieldParts) -> str:
        """compiler `_each` for HL7: one record per segment, in order_by order."""
        assert parts.skeleton is not None
        w = self.w
        out = w.var()
        segs = w.var("segs")
        segment_name = w.bind(parts.segment, "n")
        # `scope.segments(name)`; each record's ItemScope is made only if something reads it.
        if ctx.kind == "msg":
            w.emit(f"{segs} = _bn.get({segment_name}, _NONE)")
        elif ctx.kind == "line":
            w.emit(f"{segs} = {self._own()}.get({segment_name}) or "
                   f"_bn.get({segment_name}, _NONE)")
        else:
            w.emit(f"{segs} = {self._obj(ctx)}.segments({segment_name})")
        if parts.order is not None:
            order = w.bind(parts.order, "o")
            # A single record needs no order (its key, a pure path read, is not computed).
            w.emit(f"if len({segs}) > 1:")
            with w.block():
                parent = self._obj(ctx)
                w.emit(f"{segs} = sorted({segs}, key=lambda _g: "
                       f"_order_key({order}(_ItemScope(_g, {parent}))))")
        w.emit(f"{out} = []")
        segment = w.var("iseg")
        w.emit(f"for {segment} in {segs}:")
        with w.block():
            item_scope = w.var("isc")
            w.emit(f"{item_scope} = None")
            item_ctx = _Ctx("item", item_scope, ctx, parts.segment, segment)
            item = w.var("item")
            filled = w.var("filled")
            w.emit(f"{item} = {self._fresh(item, parts.skeleton())}")
            w.emit(f"{filled} = False")
            for keys, item_parts in parts.items:
                value = self.value(item_ctx, item_parts)
                held = self.kinds.get(value, ANY)
                tests = [f"{value} is not None"] if "none" in held else []
                tests += [f"{value} is not STOP"] if "stop" in held else []
                w.emit(f"if {' and '.join(tests) or 'True'}:")
                with w.block():
                    w.emit(f"{filled} = True")
                    self._put(item, keys, value)
            self.w.emit(f"if {filled}:")
            with self.w.block():
                self.w.emit(f"{out}.append({item})")
        kind: Kind = frozenset({"list"})
        w.emit(f"if not {out}:")
        with self.w.block():
            if parts.fallback is not None:
                other = self.value(ctx, parts.fallback)
                self.w.emit(f"{out} = {other}")
                kind |= self.kinds.get(other, ANY)
            else:
                self.w.emit(f"{out} = None")
                kind |= {"none"}
        self.kinds[out] = kind
        return out

    def _put(self, holder: str, keys: tuple[str, ...], value: str) -> None:
        """`holder[k1][k2]... = value`, from the local holding the deepest nested dict."""
        depth = len(keys) - 1
        while depth and (holder, *keys[:depth]) not in self.holders:
            depth -= 1
        target = self.holders[(holder, *keys[:depth])] if depth else holder
        target += "".join(f"[{self._key(k)}]" for k in keys[depth:-1])
        self.w.emit(f"{target}[{self._key(keys[-1])}] = {value}")

    def _store(self, target: str, plan: Any, value: str) -> None:
        """Put a field's value into the charge dict unless it is None or STOP."""
        kind = self.kinds.get(value, ANY)
        tests = [f"{value} is not None"] if "none" in kind else []
        tests += [f"{value} is not STOP"] if "stop" in kind else []
        if tests:
            self.w.emit(f"if {' and '.join(tests)}:")
            self.w.depth += 1
        if plan.keys is not None:
            self._put(target, plan.keys, value)
        else:
            self.w.emit(f"{self.w.bind(plan.put, 'put')}({target}, {value})")
        if tests:
            self.w.depth -= 1

    # -- the whole function ----------------------------------------------------------------

    def generate(self) -> FastApply:
        m, w = self.m, self.w
        plans = [*m.static_vars, *m.line_vars, *m.static_fields, *m.line_fields]
        if any(p.parts is None for p in plans):
            raise _Unsupported("a field without parts")
        w.lines.append("def apply_fast(msg, channel):")
        w.emit("_enc = msg.encoding")
        w.emit("_FS, _R, _C, _S, _E = _enc.field, _enc.repetition, _enc.component, "
               "_enc.subcomponent, _enc.escape")
        w.emit("if not (_R and _C and _S and _E):")
        with w.block():
            # A message declaring fewer encoding characters takes the reference path.
            w.emit("return M.apply_reference(msg, channel=channel)")
        w.emit("_bn = msg._by_name")
        msg_ctx = _Ctx("msg", "msg")
        # msg.control_id, read like any MSH value.
        w.emit(f"control_id = {self._path_value(msg_ctx, compile_path('MSH-10'))} or ''")
        self._groups()
        w.emit("if not groups:")
        with w.block():
            w.emit("return MappingResult([], [], None, 0)")
        w.emit("lines_in = len(groups)")
        w.emit("base_ns = line = None")
        for plan in m.static_vars:
            value = self.value(msg_ctx, plan.parts)
            w.emit(f"{self._base_ns()}[{w.bind(plan.name, 'n')}] = "
                   f"None if {value} is STOP else {value}")
        if m.message_filters:
            w.emit(f"_reason = _message_filters(MESSAGE_FILTERS, msg, {self._base_ns()})")
            w.emit("if _reason is not None:")
            with w.block():
                w.emit("return MappingResult([], [], _reason, lines_in)")
        # Only what the message's fields fill and the parts built once per message: the
        # line's other parts are written fresh for each line (_line_data).
        kept = self._message_parts()
        parts = {k: v for k, v in m.skeleton().items() if k in kept}
        w.emit(f"template = {self._fresh('template', parts)}")
        for plan in m.static_fields:
            value = self.value(msg_ctx, plan.parts)
            self._store("template", plan, value)
        self._build_shared()
        w.emit("static_findings = line.findings if line is not None else _NO_FINDINGS")
        w.emit("charges = []")
        w.emit("dropped = []")
        w.emit("seen_ids = set()")
        w.emit("source_base = {'channel': channel, 'control_id': control_id, "
               "'mapping': NAME, 'mapping_version': VERSION, 'mapping_hash': HASH}")
        # make_charge_id(channel, control_id or input, line_id), its hash started per message.
        w.emit("id_prefix = _sha256(f'{channel}\\x1f{control_id or INPUT}\\x1f'.encode())")
        w.emit("for index, _group in enumerate(groups, 1):")
        with w.block():
            self.in_line = True
            self._line_body()
            self.in_line = False
        w.emit("return MappingResult(charges, dropped, None, lines_in)")
        source = "\n".join(w.lines) + "\n"
        namespace: dict[str, Any] = {
            **w.names, "STOP": STOP, "_NONE": _NONE, "_finish_value": _finish_value,
            "_to_target": to_target, "_LIST_CELL": _LIST_CELL, "_Line": Line,
            "_ItemScope": ItemScope, "_order_key": _order_key, "_new": object.__new__,
            "_line_source": _line_source, "_message_filters": _message_filters,
            "ITERATE": m.iterate, "NAME": m.name, "VERSION": m.version,
            "HASH": m.file_hash, "MESSAGE_FILTERS": m.message_filters, "M": m,
            "MappingResult": _result_type(), "LATE": m.late_filters,
            "_date": date, "_Decimal": Decimal,
            "_InvalidOperation": InvalidOperation, "_CENT": _CENT, "_sha256": hashlib.sha256,
            "INPUT": m.input, "_copy_list": copy_list,
            "_MappedCharge": _mapped_charge_type(), "_get_attr": get_attr,
            "_get_item": get_item, "_DATES": _DATES, "_MONEY": _MONEY,
            "_DECIMALS": _DECIMALS, "_remember": _remember,
            "_expression_failed": expression_failed, "_new_line": _new_line,
            "_by_name": _by_name, "_NO_FINDINGS": _NO_FINDINGS,
        }
        code = compile(source, f"<mapping {m.name} {m.file_hash}>", "exec")
        exec(code, namespace)  # generated from the compiled spec: no mapping text in it
        fast: FastApply = namespace["apply_fast"]
        fast.source = source  # type: ignore[attr-defined]
        return fast

    def _build_shared(self) -> None:
        """The message-level parts no line writes, built into models once per message."""
        for name, _ in self.m.shared_parts:
            annotation = unwrap_optional(Charge.model_fields[name].annotation)
            key = f"template[{self._key(name)}]"
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                self.w.emit(f"{key} = {self._assemble(annotation, key)}")
            else:
                (item,) = typing.get_args(annotation)
                self._assemble_items(item, key, need_code=False)

    def _groups(self) -> None:
        """`groups`: the segments of each `iterate` group, as Message.groups(ITERATE)
        splits them, in one pass over the message."""
        w = self.w
        w.emit("groups = []")
        w.emit("_group = None")
        w.emit("for _seg in msg._segments:")
        with w.block():
            w.emit("if _seg.name == ITERATE:")
            with w.block():
                w.emit("_group = [_seg]")
                w.emit("groups.append(_group)")
            w.emit("elif _group is not None:")
            with w.block():
                w.emit("_group.append(_seg)")

    def _literal(self, value: Any, given: dict[str, str] | None = None) -> str:
        """Source making a fresh copy of a skeleton dict: nested dicts and (empty) lists
        new, scalars shared; `given` puts a variable at some keys of the top dict."""
        if type(value) is dict:
            given = given or {}
            items = ", ".join(f"{self._key(k)}: {given.get(k) or self._literal(v)}"
                              for k, v in value.items())
            return "{" + items + "}"
        if type(value) is list:
            if value:
                raise _Unsupported("a skeleton with a filled list")
            return "[]"
        if value is None:
            return "None"
        if type(value) not in (str, int, bool, float, Decimal, date):
            raise _Unsupported("a mutable skeleton value")
        return self.w.bind(value, "c")

    def _fresh(self, root: str, value: dict[str, Any], path: tuple[str, ...] = ()) -> str:
        """`_literal` of a skeleton dict whose nested dicts are made first into locals,
        kept as holders of `root` (the variable the dict is stored in) for `_put`."""
        items = []
        for key, item in value.items():
            if type(item) is dict:
                local = self.w.var("h")
                self.w.emit(f"{local} = {self._fresh(root, item, (*path, key))}")
                self.holders[(root, *path, key)] = local
                items.append(f"{self._key(key)}: {local}")
            else:
                items.append(f"{self._key(key)}: {self._literal(item)}")
        return "{" + ", ".join(items) + "}"

    def _key(self, key: str) -> str:
        """A charge dict key: the model's field name, written as a literal when it is a
        plain identifier (every Charge field is), else bound."""
        if key.isascii() and key.isidentifier():
            return repr(key)
        return self.w.bind(key, "n")

    def _needs_ns(self) -> None:
        """The code about to be written calls a closure that reads the line's namespace."""
        if self.in_line and not self.eager_ns:
            raise _NeedsNamespace

    def _namespace(self, extra: str = "") -> str:
        """Source giving the line's expression namespace as the reference builds it: the
        message's, the line's index, hl7 reader and charge dict, the line vars so far."""
        if self.eager_ns:
            return f"{{**ns, {extra}}}" if extra else "ns"
        self._obj(self.line_ctx)
        items = [f"**{self._base_ns()}", "'line': index", "'hl7': ls.get"]
        if self.has_data:
            items.append("'charge': data")
        items += [f"{self.w.bind(name, 'n')}: {local}" for name, local in self.line_vars.items()]
        if extra:
            items.append(extra)
        return "{" + ", ".join(items) + "}"

    def _line_body(self) -> None:
        m, w = self.m, self.w
        w.emit("_anchor = _group[0]")
        w.emit("_own = ls = None")
        line_ctx = self.line_ctx
        if m.iterate == "MSH":
            w.emit("_set_id = _anchor.get(1)")
        else:
            # The anchor is the group's first `iterate` segment: its set id, read once.
            w.emit(f"_set_id = {self._path_value(line_ctx, compile_path(f'{m.iterate}-1'))}")
        w.emit("line_id = _set_id or str(index)" if m.iterate != "MSH"
               else "line_id = str(_set_id) if _set_id else str(index)")
        w.emit("if line_id in seen_ids:")
        with w.block():
            w.emit("line_id = f'{line_id}#{index}'")
        w.emit("seen_ids.add(line_id)")
        if self.eager_ns:
            w.emit(f"ns = {{**{self._base_ns()}, 'line': index, "
                   f"'hl7': {self._obj(line_ctx)}.get}}")
        if m.early_filters:
            self._early_filters()
        self._line_data()
        self.has_data = True
        if self.eager_ns:
            w.emit("ns['charge'] = data")
        # The Line closures record findings on is made when one needs it.
        w.emit("line = None")
        for plan in m.line_vars:
            value = self.value(line_ctx, plan.parts)
            name = w.bind(plan.name, "n")
            if self.eager_ns:
                w.emit(f"ns[{name}] = None if {value} is STOP else {value}")
            else:
                local = w.var("lv")
                w.emit(f"{local} = None if {value} is STOP else {value}")
                self.line_vars[plan.name] = local
        for plan in m.line_fields:
            value = self.value(line_ctx, plan.parts)
            self._store("data", plan, value)
        w.emit("_reason = None")
        if m.late_filters:
            if not self.eager_ns:
                w.emit(f"{self._line()}.ns = {self._namespace()}")
            w.emit(f"_reason = M._first_filter(LATE, {self._obj(self.line_ctx)}, "
                   f"{self._line()}.ns, line)")
        for rule in m.rules:
            w.emit("if _reason is None:")
            with w.block():
                self._rule(rule)
        w.emit("if _reason is not None:")
        with w.block():
            w.emit("dropped.append((line_id, _reason))")
            w.emit("continue")
        self._finish()

    def _early_filters(self) -> None:
        """Path filters on the line's segments, tested before anything else is read."""
        w = self.w
        w.emit("_reason = None")
        for i, flt in enumerate(self.m.early_filters):
            if flt.get is None or flt.test is None:
                raise _Unsupported("early filter without a path")
            name = w.bind(flt, "fl")
            if i:
                w.emit("if _reason is None:")
                w.depth += 1
            if flt.paths:
                self._filter_value(self.line_ctx, flt.paths)
                test = self._filter_test(flt)
            else:
                w.emit(f"_fv = {w.bind(flt.get, 'fg')}({self._obj(self.line_ctx)})")
                test = f"{name}.test(_fv)"
            w.emit(f"if {test}:")
            with w.block():
                w.emit(f"_reason = {name}.name + ': ' + "
                       f"{name}.reason({self._namespace(repr('value') + ': _fv')})")
            if i:
                w.depth -= 1
        w.emit("if _reason is not None:")
        with w.block():
            w.emit("dropped.append((line_id, _reason))")
            w.emit("continue")

    def _filter_test(self, flt: Any) -> str:
        """`flt.test(_fv)` for a value read from paths (text or None), written inline."""
        if flt.test_kind is None:
            return f"{self.w.bind(flt, 'fl')}.test(_fv)"
        kind, operand = flt.test_kind
        bound = self.w.bind(operand, "c")
        if kind == "in":
            return f"_fv is not None and _fv.strip() in {bound}"
        if kind == "not_in":
            return f"(_fv is None or _fv.strip() not in {bound})"
        if kind == "equals":
            return f"_fv is not None and _fv.strip() == {bound}"
        if kind == "exists":
            return f"(_fv is not None) == {bound}"
        return f"_fv is not None and {bound}.search(_fv) is not None"

    def _rule(self, rule: Any) -> None:
        """One rule: a simple `when:` is tested inline and the rule runs only when it holds;
        the rule itself (and a `when:` that raised here) goes through mapping `_rule`."""
        w = self.w
        bound = w.bind(rule, "rule")
        tree = expression_tree(rule.when) if rule.when is not None else None
        test = None
        if tree is not None:
            try:
                test = self._expr(tree)
            except _Unsupported:
                test = None
        if test is None:
            self._run_rule(bound)
            return
        w.emit("try:")
        with w.block():
            w.emit(f"_when = {test}")
        w.emit("except Exception:")
        with w.block():
            # The reference evaluation raises again and records the hold.
            w.emit("_when = True")
        w.emit("if _when:")
        with w.block():
            self._run_rule(bound)

    def _run_rule(self, bound: str) -> None:
        """mapping `_rule` on the line, its namespace made first when it is made lazily."""
        self._line()
        if not self.eager_ns:
            self.w.emit("if line.ns is None:")
            with self.w.block():
                self.w.emit(f"line.ns = {self._namespace()}")
        self.w.emit(f"_reason = M._rule({bound}, line)")

    def _expr(self, node: Any) -> str:
        """Python source computing a translated expression (expressions._translate) from `ns`
        and `data`, or _Unsupported. Constants are bound names, never mapping text."""
        w, ex = self.w, self._expr
        if isinstance(node, jnodes.Const):
            return w.bind(node.value, "c")
        if isinstance(node, jnodes.Name):
            return self._name(node.name)
        if isinstance(node, jnodes.Getattr):
            inner = ex(node.node)
            if inner == "data":
                # The line's dict holds every Charge field; another name reads None.
                if node.attr in Charge.model_fields:
                    return f"data[{self._key(node.attr)}]"
                return f"data.get({w.bind(node.attr, 'n')})"
            return f"_get_attr({inner}, {w.bind(node.attr, 'n')})"
        if isinstance(node, jnodes.Getitem):
            return f"_get_item({ex(node.node)}, {ex(node.arg)})"
        if isinstance(node, jnodes.Compare):
            text = ex(node.expr)
            for op in node.ops:
                if op.op not in _COMPARE_OPS:
                    raise _Unsupported(op.op)
                text += f" {_COMPARE_OPS[op.op]} {ex(op.expr)}"
            return f"({text})"
        if isinstance(node, jnodes.And):
            return f"({ex(node.left)} and {ex(node.right)})"
        if isinstance(node, jnodes.Or):
            return f"({ex(node.left)} or {ex(node.right)})"
        if isinstance(node, jnodes.Not):
            return f"(not {ex(node.node)})"
        if isinstance(node, jnodes.Neg):
            return f"(-{ex(node.node)})"
        if type(node) in _BINARY_OPS:
            return f"({ex(node.left)} {_BINARY_OPS[type(node)]} {ex(node.right)})"
        if isinstance(node, jnodes.CondExpr) and node.expr2 is not None:
            return f"({ex(node.expr1)} if {ex(node.test)} else {ex(node.expr2)})"
        if isinstance(node, jnodes.Test) and node.name == "none" and not node.args:
            return f"({ex(node.node)} is None)"
        raise _Unsupported(type(node).__name__)

    def _name(self, name: str) -> str:
        """A name in an expression: what `ns.get(name, global)` gives at this point."""
        w = self.w
        if name == "charge" and self.has_data:
            return "data"  # var names never shadow it (the loader reserves it)
        fallback = w.bind(_ENV.globals.get(name), "c")
        if self.eager_ns:
            return f"ns.get({w.bind(name, 'n')}, {fallback})"
        if name in self.line_vars:
            return self.line_vars[name]
        if name == "line":
            return "index"
        if name == "control_id":
            return "control_id"
        if name in self.message_names:
            return f"{self._base_ns()}[{w.bind(name, 'n')}]"
        if name == "hl7":
            raise _Unsupported("hl7 read inside an expression")
        return fallback

    def _filter_value(self, ctx: _Ctx, paths: list[Path]) -> None:
        """`_fv` = the first non-empty value of the filter's path alternatives."""
        self._first_of(ctx, paths, "_fv")

    def _finish(self) -> None:
        """mapping `_finish` written out: the charge id from the message's hash prefix, the
        provenance, and the models assembled from the already typed dict."""
        w = self.w
        w.emit("_tt = data['transaction_type']")
        w.emit("if _tt != 'charge' and _tt != 'credit':")
        with w.block():
            w.emit(f"charges.append(M._finish({self._line()}, line_id, index, control_id, "
                   "source_base))")
            w.emit("continue")
        w.emit("_h = id_prefix.copy()")
        w.emit("_h.update(line_id.encode())")
        w.emit("data['charge_id'] = 'ch_' + _h.hexdigest()[:24]")
        w.emit("data['source'] = {**source_base, 'line': index, 'line_id': line_id}")
        charge = self._assemble(Charge, "data", skip=self.built)
        # MappedCharge(charge, line.findings, {}) without the dataclass __init__ call.
        w.emit("_mc = _new(_MappedCharge)")
        w.emit(f"_mc.charge = {charge}")
        w.emit("_mc.findings = line.findings if line is not None else static_findings[:]")
        w.emit("_mc.explain = {}")
        w.emit("charges.append(_mc)")

    def _message_parts(self) -> set[str]:
        """The Charge fields message-level fields fill, and the parts shared by the lines."""
        filled = {top_field(plan.name) for plan in self.m.static_fields}
        return filled | {key for key, _ in self.m.shared_parts}

    def _line_data(self) -> None:
        """`data = copy_data(template)` for this mapping: parts no message-level field
        fills are written fresh from the skeleton, the others copied from the template
        (models built once per message shared, a list of them copied). The line's own
        nested dicts stay in locals for the field stores."""
        w, m = self.w, self.m
        filled = {top_field(plan.name) for plan in m.static_fields}
        shared = {key for key, _ in m.shared_parts}
        sample = m.skeleton()
        items = []
        for name, info in Charge.model_fields.items():
            annotation = unwrap_optional(info.annotation)
            key = self._key(name)
            is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
            if name in shared:
                self.built.add(name)
                value = f"template[{key}]" if is_model else f"list(template[{key}])"
            elif name in filled:
                if is_model:
                    value = w.var("d")
                    self._copy(annotation, f"template[{key}]", value)
                    self.holders[("data", name)] = value
                elif typing.get_origin(annotation) is list:
                    value = f"_copy_list(template[{key}])"
                else:
                    value = f"template[{key}]"
            elif is_model:
                value = w.var("d")
                w.emit(f"{value} = {self._fresh('data', sample[name], (name,))}")
                self.holders[("data", name)] = value
            else:
                value = self._literal(sample[name])
            items.append(f"{key}: {value}")
        w.emit("data = {" + ", ".join(items) + "}")

    def _copy(self, model: type[BaseModel], src: str, out: str) -> None:
        """`out = data_copier(model)(src)` unrolled: nested dicts and lists copied, parts
        already built into models shared."""
        w = self.w
        w.emit(f"{out} = {src}.copy()")
        for name, info in model.model_fields.items():
            annotation = unwrap_optional(info.annotation)
            key = f"{out}[{self._key(name)}]"
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                sub = w.var("d")
                w.emit(f"{sub} = {key}")
                w.emit(f"if type({sub}) is dict:")
                with w.block():
                    copied = w.var("d")
                    self._copy(annotation, sub, copied)
                    w.emit(f"{key} = {copied}")
            elif typing.get_origin(annotation) is list:
                w.emit(f"{key} = _copy_list({key})")

    def _assemble(self, model: type[BaseModel], src: str,
                  skip: Collection[str] = ()) -> str:
        """Emit model_builder(model)(src) unrolled; returns the variable with the model.
        Parts named in `skip` are models already. On a Charge, a diagnosis without a
        code (an empty DG1-3) is dropped, as mapping `_finish` does."""
        w = self.w
        if not simple_model(model):
            out = w.var("m")
            w.emit(f"{out} = {w.bind(model_builder(model), 'b')}({src})")
            return out
        for name, info in model.model_fields.items():
            if name in skip:
                continue
            annotation = unwrap_optional(info.annotation)
            key = f"{src}[{self._key(name)}]"
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                sub = w.var("d")
                w.emit(f"{sub} = {key}")
                w.emit(f"if type({sub}) is dict:")
                with w.block():
                    built = self._assemble(annotation, sub)
                    w.emit(f"{key} = {built}")
            elif typing.get_origin(annotation) is list:
                (item,) = typing.get_args(annotation)
                if isinstance(item, type) and issubclass(item, BaseModel):
                    self._assemble_items(item, key, model is Charge and name == "diagnoses")
        out = w.var("m")
        fields_set = w.bind(set(model.model_fields), "fs")
        set_dict, set_fields, set_extra, set_private = (
            w.bind(setter, "ss") for setter in slot_setters(model))
        w.emit(f"{out} = _new({w.bind(model, 'cls')})")
        w.emit(f"{set_dict}({out}, {src})")
        w.emit(f"{set_fields}({out}, {fields_set})")
        w.emit(f"{set_extra}({out}, None)")
        w.emit(f"{set_private}({out}, None)")
        return out

    def _assemble_items(self, item: type[BaseModel], key: str, need_code: bool) -> None:
        """`key = [build(x) if type(x) is dict else x for x in key]`, each record built
        inline; with `need_code`, records without a code are left out."""
        w = self.w
        items, out, record = w.var("it"), w.var("ms"), w.var("x")
        w.emit(f"{items} = {key}")
        w.emit(f"if {items}:")
        with w.block():
            w.emit(f"{out} = []")
            w.emit(f"for {record} in {items}:")
            with w.block():
                w.emit(f"if type({record}) is dict:")
                with w.block():
                    if need_code:
                        w.emit(f"if not {record}.get('code'):")
                        with w.block():
                            w.emit("continue")
                    w.emit(f"{out}.append({self._assemble(item, record)})")
                w.emit("else:")
                with w.block():
                    w.emit(f"{out}.append({record})")
            w.emit(f"{key} = {out}")


# What a generated variable may hold, as a set of: none, text (a non-empty str), str (a
# str, maybe ''), list, texts, stop (STOP) and other (anything else). Knowing it at
# generation time leaves out the tests that cannot fail.
Kind = frozenset[str]
TEXT: Kind = frozenset({"none", "text", "str"})
ANY: Kind = frozenset({"none", "text", "str", "list", "texts", "stop", "other"})
# list: any list; texts: a list of non-empty strs.
LISTS: Kind = frozenset({"list", "texts"})


def _kind_of(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return "text" if value else "str"
    if isinstance(value, list):
        return "texts" if all(isinstance(item, str) and item for item in value) else "list"
    return "other"


def _item_kind(kind: Kind) -> Kind:
    """What the items of the lists of this kind may hold (nothing: no lists)."""
    if "list" in kind:
        return ANY - LISTS - {"stop"}
    return frozenset({"text"}) if "texts" in kind else frozenset()


def _empty_test(var: str, kind: Kind) -> str:
    """Source for `var is None or var == ''` (STOP is neither), given what `var` holds."""
    empties = kind & {"none", "str"}
    if not empties:
        return "False"
    if not kind & (LISTS | {"other"}):
        return f"not {var}"  # None, '' and no other str, and STOP is truthy
    if empties == {"none"}:
        return f"{var} is None"
    return f"{var} == ''" if empties == {"str"} else f"{var} is None or {var} == ''"


def _converted_kind(parts: FieldParts, kind: Kind) -> Kind:
    """What a converter (and the retarget) makes of a value of this kind (not None)."""
    if parts.retarget is not None:
        return frozenset({"str"}) if parts.retarget in ("string", "code") \
            else frozenset({"other"})
    if parts.convert is TYPES["string"]:
        return frozenset({"str"}) | (kind & {"text"})
    return frozenset({"str"}) if parts.convert is TYPES["code"] else frozenset({"other"})


def _present_test(var: str, kind: Kind) -> str:
    """Source for `var is not STOP and not (var is None or var == '')`, or '' when it
    always holds."""
    tests = [f"{var} is not STOP"] if "stop" in kind else []
    empty = _empty_test(var, kind - {"stop"})
    if empty.startswith("not "):
        tests.append(var)
    elif empty != "False":
        tests.append(f"not ({empty})")
    return " and ".join(tests)


# Converted texts (immutable results only), shared by all generated functions; bounded.
_DATES: dict[str, date] = {}
_MONEY: dict[str, Decimal] = {}
_DECIMALS: dict[str, Decimal] = {}
_KNOWN_LIMIT = 4096


def _remember(known: dict[str, Any], text: str, value: Any) -> None:
    if len(known) >= _KNOWN_LIMIT:
        known.clear()
    known[text] = value


def _finish_value(value: str, sub: int, enc: Any, codec: str) -> str | None:
    """The end of `fast_first` for a value with a sub-component separator, an escape or
    the explicit null: pick the sub-component, then treat '""' as absent, then unescape."""
    if enc.subcomponent in value:
        parts = value.split(enc.subcomponent)
        value = parts[sub] if sub < len(parts) else ""
    elif sub:
        return None
    if not value or value == '""':
        return None
    if enc.escape in value:
        return unescape(value, enc, codec) or None
    return value


def _new_line(data: dict[str, Any], ns: dict[str, Any] | None,
              static_findings: list[Any]) -> Line:
    """A line's Line as the reference makes it: the message's findings come first."""
    line = Line(data, ns, False)  # type: ignore[arg-type]  # None until a rule reads it
    if static_findings:
        line.findings.extend(static_findings)
    return line


def _by_name(segments: list[Any]) -> dict[str, list[Any]]:
    """A group's segments by name, in order (what LineSource indexes)."""
    own: dict[str, list[Any]] = {}
    for seg in segments:
        found = own.get(seg.name)
        if found is None:
            own[seg.name] = [seg]
        else:
            found.append(seg)
    return own


def _paths(mapping: CompiledMapping) -> list[Path]:
    """Every HL7 path the generated code may read inline."""
    paths = [compile_path("MSH-10")]
    if mapping.iterate:
        paths.append(compile_path(f"{mapping.iterate}-1"))
    pending = [plan.parts for plan in (*mapping.static_vars, *mapping.line_vars,
                                       *mapping.static_fields, *mapping.line_fields)]
    paths += [path for flt in mapping.early_filters for path in flt.paths]
    while pending:
        parts = pending.pop()
        if parts is None:
            continue
        paths += parts.paths
        pending += [parts.fallback, parts.inner, *(item for _, item in parts.items)]
    return paths


def _widths(paths: list[Path]) -> dict[str, int]:
    """Segment name -> the highest field number a path reads there."""
    widths: dict[str, int] = {}
    for path in paths:
        widths[path.seg] = max(widths.get(path.seg, 0), path.field)
    return widths


def _line_source(own: dict[str, list[Any]], msg: Any) -> LineSource:
    """A LineSource over a group already indexed by segment name."""
    source: LineSource = object.__new__(LineSource)
    source.own = own
    source.message = msg
    return source


def _message_filters(filters: list[Any], msg: Any, ns: dict[str, Any]) -> str | None:
    for flt in filters:
        try:
            reason = flt.matches(msg, ns)
        except Exception as exc:  # a broken message filter must not pass messages silently
            raise MappingError(f"message filter {flt.name!r} could not be evaluated "
                               f"({type(exc).__name__}: {exc})") from None
        if reason is not None:
            return f"{flt.name}: {reason}"
    return None


def _mapped_charge_type() -> Any:
    from engine.mapping.mapping import MappedCharge

    return MappedCharge


def _result_type() -> Any:
    from engine.mapping.mapping import MappingResult

    return MappingResult


def generate(mapping: CompiledMapping) -> FastApply | None:
    """The specialised apply for an HL7 mapping that iterates, or None (use the closures)."""
    if mapping.input != "hl7" or not mapping.iterate:
        return None
    try:
        try:
            return _Generator(mapping).generate()
        except _NeedsNamespace:
            return _Generator(mapping, eager_ns=True).generate()
    except _Unsupported:
        return None
