"""Building Charge models from the nested dicts a mapping fills, without re-validating.

Every value a mapping puts into the dict has already been converted to the field's type
(dates, Decimals, text), so a second validation pass would only cost time: on the hot path
the models are assembled directly. `tests/mapping` checks that the result equals a fully
validated Charge.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from engine.mapping.targets import unwrap_optional

__all__ = ["copy_list", "data_copier", "model_builder", "model_skeleton", "simple_model",
           "slot_setters"]

# The instance layout model_construct fills; when pydantic changes it, fall back to it.
_LAYOUT = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")


def model_skeleton(model: type[BaseModel]) -> Callable[[], dict[str, Any]]:
    """A factory of fresh nested dicts shaped like `model`, holding its defaults."""
    # Every key in field order (the JSON follows the dict's order); nested parts and
    # lists are filled in fresh by make().
    scalars: dict[str, Any] = {}
    nested: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    lists: list[str] = []
    for name, info in model.model_fields.items():
        annotation = unwrap_optional(info.annotation)
        scalars[name] = None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((name, model_skeleton(annotation)))
        elif info.default_factory is not None:
            lists.append(name)
        elif not info.is_required():
            scalars[name] = info.default

    def make() -> dict[str, Any]:
        out = scalars.copy()
        for name, sub in nested:
            out[name] = sub()
        for name in lists:
            out[name] = []
        return out

    return make


def simple_model(model: type[BaseModel]) -> bool:
    """True when an instance is just its field dict plus pydantic's bookkeeping slots."""
    return (
        tuple(BaseModel.__slots__) == _LAYOUT
        and not model.__pydantic_post_init__
        and not model.__private_attributes__
        and model.model_config.get("extra") != "allow"
    )


def slot_setters(model: type[BaseModel]) -> list[Callable[[Any, Any], None]]:
    """The setters of `_LAYOUT`'s slots on a simple model's instances, in that order.

    Calling a slot's descriptor directly costs about half of object.__setattr__, which
    looks the descriptor up by name every time.
    """
    setters = []
    for name in _LAYOUT:
        owner = next(klass for klass in model.__mro__ if name in klass.__dict__)
        setters.append(owner.__dict__[name].__set__)
    return setters


def _assembler(model: type[BaseModel]) -> Callable[[dict[str, Any]], Any]:
    """Make an instance from a complete, typed field dict (what model_construct does)."""
    if not simple_model(model):
        return lambda values: model.model_construct(**values)
    # Shared on purpose: it already names every field, so pydantic's only mutation of it
    # (adding a field name on attribute assignment) never changes it.
    fields_set = set(model.model_fields)
    new = model.__new__
    set_dict, set_fields, set_extra, set_private = slot_setters(model)

    def assemble(values: dict[str, Any]) -> Any:
        obj = new(model)
        set_dict(obj, values)
        set_fields(obj, fields_set)
        set_extra(obj, None)
        set_private(obj, None)
        return obj

    return assemble


def model_builder(model: type[BaseModel]) -> Callable[[dict[str, Any]], Any]:
    """Build `model` (and its nested models) in place from a skeleton-shaped dict."""
    subs: list[tuple[str, Callable[[dict[str, Any]], Any]]] = []
    items: list[tuple[str, Callable[[dict[str, Any]], Any]]] = []
    for name, info in model.model_fields.items():
        annotation = unwrap_optional(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            subs.append((name, model_builder(annotation)))
        elif typing.get_origin(annotation) is list:
            (item,) = typing.get_args(annotation)
            if isinstance(item, type) and issubclass(item, BaseModel):
                items.append((name, model_builder(item)))
    assemble = _assembler(model)
    if not subs and not items and simple_model(model):
        # A leaf model (Address, Diagnosis ...): assembling is all there is to do.
        return assemble

    def build(data: dict[str, Any]) -> Any:
        for name, sub in subs:
            value = data[name]
            if type(value) is dict:  # a part shared by the message's charges is built already
                data[name] = sub(value)
        for name, sub in items:
            data[name] = [sub(x) if type(x) is dict else x for x in data[name]]
        return assemble(data)

    return build


def copy_list(value: list[Any]) -> list[Any]:
    if not value or type(value[0]) is not dict:
        return list(value)
    out = []
    for item in value:
        item = item.copy()
        for key, inner in item.items():
            if type(inner) is dict:
                item[key] = inner.copy()
        out.append(item)
    return out


def data_copier(model: type[BaseModel]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Copy a skeleton-shaped dict deeply enough that changing the copy never changes the
    original; parts already built into models are shared, not copied."""
    nested: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = []
    lists: list[str] = []
    for name, info in model.model_fields.items():
        annotation = unwrap_optional(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((name, data_copier(annotation)))
        elif typing.get_origin(annotation) is list:
            lists.append(name)

    def copy(data: dict[str, Any]) -> dict[str, Any]:
        out = data.copy()
        for name, sub in nested:
            value = out[name]
            if type(value) is dict:
                out[name] = sub(value)
        for name in lists:
            out[name] = copy_list(out[name])
        return out

    return copy
