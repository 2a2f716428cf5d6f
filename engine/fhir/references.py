"""FHIR references: parsing `Type/id[/_history/v]` (relative or absolute), walking every
Reference in a resource, and rewriting `urn:uuid:` references inside a Bundle."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_ID = r"[A-Za-z0-9\-.]{1,64}"
_LITERAL = re.compile(rf"(?:^|/)([A-Z][A-Za-z]+)/({_ID})(?:/_history/({_ID}))?$")
ID_PATTERN = re.compile(rf"^{_ID}$")
_REFERENCE_KEYS = {"id", "extension", "reference", "type", "identifier", "display"}


@dataclass(frozen=True)
class Target:
    """What a literal reference points at."""

    resource_type: str
    resource_id: str
    version_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


def parse_reference(ref: str) -> Target | None:
    """`Patient/1`, `Patient/1/_history/2` or `https://host/fhir/Patient/1` -> Target.

    `urn:uuid:`/`urn:oid:` and `#contained` references are not literal: None.
    """
    if not ref or ref.startswith(("urn:", "#")):
        return None
    match = _LITERAL.search(ref)
    if match is None:
        return None
    return Target(match.group(1), match.group(2), match.group(3))


def iter_references(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Reference element of a resource as (element path, the Reference dict).

    The path is dotted without indexes (`performer.actor`); contained resources are
    skipped (their references are not the container's).
    """
    if isinstance(value, dict):
        if path and (isinstance(value.get("reference"), str) or (
                isinstance(value.get("identifier"), dict) and set(value) <= _REFERENCE_KEYS)):
            yield path, value
        for key, item in value.items():
            if key in ("contained", "extension", "modifierExtension", "resourceType"):
                continue
            yield from iter_references(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for item in value:
            yield from iter_references(item, path)


def rewrite_references(resource: dict[str, Any], replacements: dict[str, str]) -> int:
    """Replace every reference whose text is a key of `replacements` (a Bundle entry's
    fullUrl) with its value (`Type/id`); returns how many were rewritten."""
    count = 0
    for _, ref in iter_references(resource):
        text = ref.get("reference")
        if isinstance(text, str) and text in replacements:
            ref["reference"] = replacements[text]
            count += 1
    return count
