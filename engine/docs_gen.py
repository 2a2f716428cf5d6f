"""Generates docs/connectors.md from the connectors' own settings models, so the
reference can never drift from the code (a test fails when the committed file is stale).

    python -m engine.docs_gen > docs/connectors.md
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from engine.connectors import DESTINATION_TYPES, SOURCE_TYPES, load_connector


def _type_name(annotation: Any) -> str:
    import typing

    if typing.get_origin(annotation) is None and hasattr(annotation, "__name__"):
        text = annotation.__name__
    else:
        text = str(annotation)
    for noise in ("typing.", "pathlib.", "channels.", "engine."):
        text = text.replace(noise, "")
    return text.replace("NoneType", "None")


def _default(info: Any) -> str:
    if info.default is not PydanticUndefined:
        value = info.default
        if isinstance(value, BaseModel):
            return "(defaults)"
        return f"`{value!r}`" if value is not None else "`None`"
    if info.default_factory is not None:
        try:
            produced = info.default_factory()
        except TypeError:
            return "(computed)"
        return "(defaults)" if isinstance(produced, BaseModel) else f"`{produced!r}`"
    return "**required**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def model_table(model: type[BaseModel]) -> list[str]:
    lines = ["| setting | type | default | description |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        description = _cell(info.description or "")
        type_name = _cell(_type_name(info.annotation))
        lines.append(f"| `{name}` | {type_name} | {_default(info)} | {description} |")
    return lines


def render() -> str:
    out = ["# Connector reference", "",
           "Generated from each connector's settings model by `python -m engine.docs_gen`;",
           "do not edit by hand. A channel's `source:` and each entry of `destinations:` take",
           "`type:` plus the settings below.", ""]
    for title, kind, table in (("Sources", "source", SOURCE_TYPES),
                               ("Destinations", "destination", DESTINATION_TYPES)):
        out += [f"## {title}", ""]
        for type_name in sorted(table):
            cls = load_connector(kind, type_name)  # type: ignore[arg-type]
            out += [f"### `{type_name}`", ""]
            paragraph = (cls.__doc__ or "").strip().split("\n\n")[0]
            if paragraph:
                out += [" ".join(line.strip() for line in paragraph.splitlines()), ""]
            out += [*model_table(cls.settings_model), ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
