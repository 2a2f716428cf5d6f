"""Configuration: config.yaml loaded into pydantic models, with file:line on every error."""

from engine.config.loader import load_config
from engine.config.models import ChannelConfig, EngineConfig

__all__ = ["ChannelConfig", "EngineConfig", "load_config"]
