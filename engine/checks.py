"""`chargebridge check`, in stages: parse and schema of config.yaml (with each connector's
own settings), then every mapping and lookup table the channels reference."""

from __future__ import annotations

from pathlib import Path

from engine.errors import ConfigError


def check_all(config_path: Path) -> list[str]:
    """Every problem found, as `file:line:col: where: what` lines; empty means valid."""
    from engine.config import load_config

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return list(exc.problems)
    from engine.mapping.tools import check_mapping_files

    mappings = sorted({str(config.resolve(c.mapping)) for c in config.channels if c.mapping})
    problems = list(check_mapping_files(mappings)) if mappings else []
    try:
        from engine.scrub import ScrubSettings

        ScrubSettings.model_validate(config.scrub)
    except Exception as exc:  # pydantic's message names the field
        problems.append(f"{config_path}:1:1: scrub: {exc}")
    return problems
