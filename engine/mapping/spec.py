"""The shape of a mapping file, as pydantic models: what `load_mapping` validates first.

Unknown keys are refused with a "did you mean" hint. Meaning (paths, field names, lookups,
expressions) is checked afterwards by the compiler, which knows the positions too.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = ["FieldSpec", "FilterSpec", "LookupSpec", "MappingSpec", "RuleSpec", "TableSpec"]

TypeName = Literal["string", "code", "date", "datetime", "decimal", "money", "integer"]
MissingPolicy = Literal["hold", "default", "keep", "fail"]


def did_you_mean(name: str, choices: list[str] | set[str]) -> str:
    """' (did you mean 'x'?)' when a close choice exists, else a short list of choices."""
    ordered = sorted(choices)
    # Swapped letters (PDI for PID) first: difflib ranks them no better than other near misses.
    swapped = [c for c in ordered if len(c) == len(name) and sorted(c) == sorted(name)]
    close = swapped or difflib.get_close_matches(name, ordered, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if len(ordered) <= 12:
        return f" (expected one of: {', '.join(ordered)})"
    return ""


class _Spec(BaseModel):
    """Base: unknown keys are an error naming the key and the closest known one."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = {info.alias or name for name, info in cls.model_fields.items()}
            for key in data:
                if key not in allowed:
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key '{key}'{hint}",
                        {"key": str(key), "hint": did_you_mean(str(key), allowed)},
                    )
        return data


class LookupSpec(_Spec):
    """`lookup:` on a field: key -> row of a table, then one column of that row."""

    table: str
    column: str | None = None
    missing: MissingPolicy = Field(
        "hold", description="What a key absent from the table does: hold, default, keep or fail.")
    default: Any = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `lookup: chargemaster.cpt` is short for {table: chargemaster, column: cpt}.
        if isinstance(data, str):
            table, _, column = data.partition(".")
            return {"table": table, "column": column or None}
        return data


class FieldSpec(_Spec):
    """How one field (or var) gets its value: a source, normalizers, lookup, type, fallback."""

    path: str | None = None
    value: Any = None
    expr: str | None = None
    each: str | None = None
    fields: dict[str, FieldSpec] | None = None
    order_by: str | None = None
    type: TypeName | None = None
    normalize: list[str | dict[str, Any]] = Field(default_factory=list)
    lookup: LookupSpec | None = None
    default: Any = None
    else_: FieldSpec | None = Field(None, alias="else")
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `service_date: FT1-4.1` is short for {path: FT1-4.1}.
        if isinstance(data, str):
            return {"path": data}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        given = [k for k in ("path", "expr", "each") if getattr(self, k) is not None]
        if "value" in self.model_fields_set:
            given.append("value")
        if len(given) > 1:
            raise PydanticCustomError(
                "one_source", "give only one of path, value, expr, each (got {given})",
                {"given": ", ".join(given)})
        if not given and self.default is None and self.else_ is None:
            raise PydanticCustomError(
                "no_source", "a field needs a source: path, value, expr, each or default", {})
        if self.each is not None and not self.fields:
            raise PydanticCustomError(
                "each_fields", "each: needs fields: naming what to read from every item", {})
        if self.fields is not None and self.each is None:
            raise PydanticCustomError(
                "fields_each", "fields: belongs with each: (one record per segment)", {})
        return self

    @property
    def has_value(self) -> bool:
        """True when `value:` was written (a constant, possibly null)."""
        return "value" in self.model_fields_set


class TableSpec(_Spec):
    """A lookup table: a CSV or YAML file beside the mapping, or rows written inline."""

    file: str | None = None
    key: str | None = Field(None, description="Key column (default: the first column).")
    rows: dict[str, Any] | list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TableSpec:
        if (self.file is None) == (self.rows is None):
            raise PydanticCustomError(
                "table_source", "a table needs either file: or rows: (not both)", {})
        return self


class FilterSpec(_Spec):
    """Drop a whole message or one charge when a condition holds, recording the reason."""

    name: str | None = None
    drop: Literal["message", "charge"] = "charge"
    when: str | None = None
    path: str | None = None
    in_: list[Any] | None = Field(None, alias="in")
    not_in: list[Any] | None = None
    equals: Any = None
    matches: str | None = None
    exists: bool | None = None
    reason: str

    @model_validator(mode="after")
    def _condition(self) -> FilterSpec:
        tests = [k for k in ("in_", "not_in", "matches", "exists") if getattr(self, k) is not None]
        if "equals" in self.model_fields_set:
            tests.append("equals")
        if self.when is None and self.path is None:
            raise PydanticCustomError(
                "filter_condition", "a filter needs when: or path: with in/not_in/equals/"
                "matches/exists", {})
        if self.when is not None and self.path is not None:
            raise PydanticCustomError(
                "filter_condition", "give when: or path:, not both", {})
        if self.path is not None and len(tests) != 1:
            raise PydanticCustomError(
                "filter_condition", "path: needs exactly one test: in, not_in, equals, "
                "matches or exists", {})
        return self


class RuleSpec(_Spec):
    """`when:` a condition holds, do one or more actions on the charge."""

    name: str
    when: str | None = None
    set: dict[str, Any] | None = None
    add_modifier: str | list[str] | None = None
    hold: str | None = None
    warn: str | None = None
    drop: str | None = None

    @field_validator("add_modifier")
    @classmethod
    def _modifier_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _some_action(self) -> RuleSpec:
        if not any((self.set, self.add_modifier, self.hold, self.warn, self.drop)):
            raise PydanticCustomError(
                "rule_action", "a rule needs an action: set, add_modifier, hold, warn or drop",
                {})
        return self


class MappingSpec(_Spec):
    """One mapping file as written (before `extends:` is resolved)."""

    name: str | None = None
    version: str
    description: str | None = None
    input: Literal["hl7", "fhir"] | None = None
    iterate: str | None = None
    extends: str | None = None
    tables: dict[str, TableSpec] = Field(default_factory=dict)
    vars: dict[str, FieldSpec] = Field(default_factory=dict)
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    filters: list[FilterSpec] = Field(default_factory=list)
    rules: list[RuleSpec] = Field(default_factory=list)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        # `version: 2` or `version: 1.3` are numbers to YAML; keep them as written text.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value
