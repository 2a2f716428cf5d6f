"""Loading config.yaml: YAML with positions, ${ENV} substitution, the engine model, and
each connector's own settings model — every problem reported as file:line:col."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.config.models import EngineConfig
from engine.config.yaml_positions import load_positioned, pydantic_problems
from engine.connectors import load_connector
from engine.errors import ConfigError


def _did_you_mean(name: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(choices)})"


def load_config(path: str | Path) -> EngineConfig:
    """Load and fully validate a config file; raise ConfigError listing every problem."""
    doc = load_positioned(path)
    try:
        config = EngineConfig.model_validate(doc.data or {})
    except ValidationError as exc:
        raise ConfigError(pydantic_problems(doc, exc, model=EngineConfig)) from exc
    config.base_dir = Path(path).resolve().parent
    problems: list[str] = []
    dest_names = [d.name for d in config.destinations]
    seen: set[str] = set()
    for i, channel in enumerate(config.channels):
        loc: tuple[Any, ...] = ("channels", i)
        if channel.name in seen:
            problems.append(
                f"{doc.where((*loc, 'name'))}: name: duplicate channel {channel.name!r}")
        seen.add(channel.name)
        settings = _connector_settings(doc, "source", channel.source.type,
                                       channel.source.settings_dict(), (*loc, "source"), problems)
        if settings is not None:
            config.source_settings[channel.name] = settings
        for j, dest in enumerate(channel.destinations):
            if dest not in dest_names:
                problems.append(f"{doc.where((*loc, 'destinations', j))}: destinations: unknown "
                                f"destination {dest!r}{_did_you_mean(dest, dest_names)}")
        if channel.mapping is not None and not config.resolve(channel.mapping).is_file():
            problems.append(f"{doc.where((*loc, 'mapping'))}: mapping: file not found: "
                            f"{channel.mapping}")
    for i, dest_cfg in enumerate(config.destinations):
        loc = ("destinations", i)
        if dest_names.count(dest_cfg.name) > 1:
            problems.append(f"{doc.where((*loc, 'name'))}: name: duplicate destination "
                            f"{dest_cfg.name!r}")
        settings = _connector_settings(doc, "destination", dest_cfg.type,
                                       dest_cfg.settings_dict(), loc, problems)
        if settings is not None:
            config.destination_settings[dest_cfg.name] = settings
    if problems:
        raise ConfigError(problems)
    return config


def _connector_settings(doc: Any, kind: str, type_name: str, raw: dict[str, Any],
                        loc: tuple[Any, ...], problems: list[str]) -> Any:
    from engine.connectors import DESTINATION_TYPES, SOURCE_TYPES

    table = SOURCE_TYPES if kind == "source" else DESTINATION_TYPES
    if type_name not in table:
        problems.append(f"{doc.where((*loc, 'type'))}: type: unknown {kind} type "
                        f"{type_name!r}{_did_you_mean(type_name, sorted(table))}")
        return None
    try:
        cls = load_connector(kind, type_name)  # type: ignore[arg-type]
    except ImportError as exc:
        problems.append(f"{doc.where((*loc, 'type'))}: type: connector {type_name!r} is not "
                        f"available ({exc})")
        return None
    try:
        return cls.settings_model.model_validate(raw)
    except ValidationError as exc:
        problems.extend(pydantic_problems(doc, exc, loc, model=cls.settings_model))
        return None
