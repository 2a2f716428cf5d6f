"""The catalogue of Charge fields a mapping may fill, derived once from the Charge model.

A target is named with dots (`patient.last_name`); list-of-record fields (`coverage`,
`diagnoses`) also accept an index (`coverage[0].member_id`). Each target knows its value
type, so a mapping rarely needs to write `type:`.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from engine.charge import Charge

__all__ = [
    "RECORD_TARGETS",
    "TARGETS",
    "RecordTarget",
    "Target",
    "all_target_names",
    "parse_target",
    "top_field",
    "unwrap_optional",
]

# Fields a mapping never writes: the id is derived, provenance is recorded by the engine.
_RESERVED = {"charge_id", "source"}
# Amounts are money (two decimal places); other decimals keep their precision.
_MONEY = {"amount"}


@dataclass(frozen=True)
class Target:
    """One scalar or list-of-scalars field: `keys` is its path inside the charge dict."""

    name: str
    keys: tuple[str, ...]
    type: str  # string | date | decimal | money | integer
    is_list: bool = False


@dataclass(frozen=True)
class RecordTarget:
    """A list of records (coverage, diagnoses) with its own item fields."""

    name: str
    model: type[BaseModel]
    fields: dict[str, Target] = field(default_factory=dict)
    # The item field a plain list of values fills (diagnoses: a list of codes).
    primary: str | None = None


def top_field(name: str) -> str:
    """The Charge field a target name writes into: `patient.address.city` -> patient,
    `coverage[1].member_id` -> coverage."""
    return name.split(".", 1)[0].split("[", 1)[0]


def unwrap_optional(annotation: Any) -> Any:
    """`X | None` -> X; anything else unchanged."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _scalar_type(annotation: Any, name: str) -> str:
    if annotation is date:
        return "date"
    if annotation is Decimal:
        return "money" if name in _MONEY else "decimal"
    if annotation is int:
        return "integer"
    return "string"


def _walk(model: type[BaseModel], prefix: tuple[str, ...], out: dict[str, Target],
          records: dict[str, RecordTarget] | None) -> None:
    for name, info in model.model_fields.items():
        if not prefix and name in _RESERVED:
            continue
        keys = (*prefix, name)
        dotted = ".".join(keys)
        annotation = unwrap_optional(info.annotation)
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _walk(annotation, keys, out, records)
        elif origin is list:
            (item,) = typing.get_args(annotation)
            if isinstance(item, type) and issubclass(item, BaseModel):
                if records is None:
                    continue
                item_fields: dict[str, Target] = {}
                _walk(item, (), item_fields, None)
                primary = "code" if "code" in item_fields else None
                records[dotted] = RecordTarget(dotted, item, item_fields, primary)
            else:
                out[dotted] = Target(dotted, keys, _scalar_type(item, name), is_list=True)
        else:
            out[dotted] = Target(dotted, keys, _scalar_type(annotation, name))


def _catalogue() -> tuple[dict[str, Target], dict[str, RecordTarget]]:
    scalars: dict[str, Target] = {}
    records: dict[str, RecordTarget] = {}
    _walk(Charge, (), scalars, records)
    return scalars, records


TARGETS, RECORD_TARGETS = _catalogue()

_INDEXED = re.compile(r"^(?P<list>[a-z_]+)\[(?P<index>[0-9]+)\]\.(?P<field>[a-z_.]+)$")


def parse_target(name: str) -> tuple[Target | RecordTarget | None, int | None, str | None]:
    """Resolve a field name: (target, record index, item field) or (None, None, None).

    `procedure.code` -> (Target, None, None); `coverage` -> (RecordTarget, None, None);
    `coverage[1].member_id` -> (RecordTarget, 1, "member_id").
    """
    if name in TARGETS:
        return TARGETS[name], None, None
    if name in RECORD_TARGETS:
        return RECORD_TARGETS[name], None, None
    match = _INDEXED.match(name)
    if match:
        record = RECORD_TARGETS.get(match["list"])
        if record is not None and match["field"] in record.fields:
            return record, int(match["index"]), match["field"]
    return None, None, None


def all_target_names() -> list[str]:
    """Every name `fields:` accepts (indexed forms shown with [0]), for hints and docs."""
    names = list(TARGETS) + list(RECORD_TARGETS)
    for record in RECORD_TARGETS.values():
        names += [f"{record.name}[0].{item}" for item in record.fields]
    return names
