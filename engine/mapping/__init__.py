"""The YAML mapping language: load, validate and compile mappings; apply them to messages.

    mapping = load_mapping("mappings/dft_p03.yaml")      # raises ConfigError
    result = mapping.apply(parse(raw), channel="clinic")  # MappingResult

See docs/mapping-reference.md for the language itself.
"""

from engine.mapping.loader import load_mapping
from engine.mapping.mapping import CompiledMapping, MappedCharge, MappingResult
from engine.mapping.registry import MappingRegistry

__all__ = ["CompiledMapping", "MappedCharge", "MappingRegistry", "MappingResult", "load_mapping"]
