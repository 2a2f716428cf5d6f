"""A YAML loader that remembers where every value came from (file, line, column).

Pydantic error locations (`("channels", 0, "source", "port")`) are looked up here so a
config or mapping error names `file:line:col`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import ConfigError

Loc = tuple[str | int, ...]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class PositionedDocument:
    """A parsed YAML document plus the source position of every mapping key and value."""

    path: Path
    data: Any
    positions: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def where(self, loc: Loc) -> str:
        """`file:line:col` of the deepest known prefix of `loc`."""
        for end in range(len(loc), -1, -1):
            pos = self.positions.get(tuple(loc[:end]))
            if pos is not None:
                return f"{self.path}:{pos[0]}:{pos[1]}"
        return f"{self.path}:1:1"


def _substitute_env(text: str, doc_path: Path, line: int, col: int, problems: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None:
            if default is not None:
                return default
            problems.append(
                f"{doc_path}:{line}:{col}: ${{{name}}}: environment variable is not set "
                f"(hint: export {name}=... or write ${{{name}:-default}})"
            )
            return ""
        return value

    return _ENV.sub(replace, text)


def load_positioned(path: str | Path, *, substitute_env: bool = True) -> PositionedDocument:
    """Parse one YAML file, keeping positions; YAML syntax errors become ConfigError."""
    doc_path = Path(path)
    try:
        text = doc_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{doc_path}:1:1: file: cannot read ({exc.strerror})"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError([f"{doc_path}:{line}:{col}: yaml: {exc.problem}"]) from exc
    doc = PositionedDocument(doc_path, None)
    problems: list[str] = []
    constructor = yaml.SafeLoader("")

    def build(n: yaml.Node, loc: Loc) -> Any:
        doc.positions.setdefault(loc, (n.start_mark.line + 1, n.start_mark.column + 1))
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in n.value:
                key = constructor.construct_object(key_node, deep=True)
                doc.positions[(*loc, key)] = (
                    key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = build(value_node, (*loc, key))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(item, (*loc, i)) for i, item in enumerate(n.value)]
        value = constructor.construct_object(n, deep=True)
        if substitute_env and isinstance(value, str) and "${" in value:
            value = _substitute_env(value, doc_path, n.start_mark.line + 1,
                                    n.start_mark.column + 1, problems)
            # An env value that is a number or boolean should validate like a literal one.
            value = yaml.safe_load(value) if value and not value.strip().startswith("#") else value
        return value

    doc.data = build(node, ()) if node is not None else {}
    if problems:
        raise ConfigError(problems)
    return doc


def _model_at(model: Any, loc: Loc) -> Any:
    """The pydantic model class that owns the last element of `loc`, when known."""
    import typing

    from pydantic import BaseModel

    current = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        info = getattr(current, "model_fields", {}).get(part)
        if info is None:
            return None
        candidates = [info.annotation, *typing.get_args(info.annotation)]
        for arg in list(candidates):
            candidates.extend(typing.get_args(arg))
        current = next((c for c in candidates
                        if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return current


def pydantic_problems(doc: PositionedDocument, exc: Any, prefix: Loc = (),
                      model: Any = None) -> list[str]:
    """Turn a pydantic ValidationError into `file:line:col: field: message` lines."""
    import difflib

    lines = []
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        field_name = ".".join(str(p) for p in loc) or "(document)"
        hint = ""
        if err["type"] == "extra_forbidden":
            owner = _model_at(model or getattr(exc, "title", None), tuple(err["loc"]))
            known = list(getattr(owner, "model_fields", {}))
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            hint = (f" (unknown field; did you mean {close[0]!r}?)" if close else
                    f" (unknown field; known: {', '.join(known)})" if known else
                    " (unknown field)")
        lines.append(f"{doc.where(loc)}: {field_name}: {err['msg']}{hint}")
    return lines
