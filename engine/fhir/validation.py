"""Validating inbound resources with fhir.resources (its R4B models, which match R4 for
the resources we accept), plus the required-binding codes those models leave unchecked.

Every problem becomes an Issue whose `expression` is the element's FHIRPath, e.g.
`ChargeItem.occurrenceDateTime` or `Bundle.entry[2].resource.code.coding[0].system`.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from engine.fhir.outcome import Issue

try:  # fhir.resources >= 7 ships R4B beside its default (R5) models
    from fhir.resources.R4B import get_fhir_model_class
except ImportError:  # pragma: no cover - an older fhir.resources whose default is R4
    from fhir.resources import get_fhir_model_class

__all__ = ["is_fhir_type", "parse_json", "validate_resource"]

# Required bindings (value sets a resource MUST use) for the elements we act on.
_CODES: dict[str, dict[str, frozenset[str]]] = {
    "ChargeItem": {"status": frozenset({"planned", "billable", "not-billable", "aborted",
                                        "billed", "entered-in-error", "unknown"})},
    "Encounter": {"status": frozenset({"planned", "arrived", "triaged", "in-progress",
                                       "onleave", "finished", "cancelled", "entered-in-error",
                                       "unknown"})},
    "Coverage": {"status": frozenset({"active", "cancelled", "draft", "entered-in-error"})},
    "Account": {"status": frozenset({"active", "inactive", "entered-in-error", "on-hold",
                                     "unknown"})},
    "Patient": {"gender": frozenset({"male", "female", "other", "unknown"})},
    "Practitioner": {"gender": frozenset({"male", "female", "other", "unknown"})},
}
_ISSUE_CODE = {"missing": "required", "model_field_validation.missing": "required",
               "extra_forbidden": "structure", "json_invalid": "structure",
               "string_type": "value", "value_error": "value"}
_ELEMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@lru_cache(maxsize=64)
def _model(resource_type: str) -> Any:
    try:
        return get_fhir_model_class(resource_type)
    except (ValueError, KeyError, AttributeError):
        return None


def is_fhir_type(name: str) -> bool:
    """Whether `name` is a FHIR resource type at all (known to fhir.resources)."""
    return bool(name) and name[0].isupper() and _model(name) is not None


def parse_json(body: bytes) -> Any:
    """The JSON in `body`; raises ValueError with line/column when it is not JSON."""
    try:
        # A leading byte order mark is tolerated (RFC 8259 lets a parser ignore it).
        return json.loads(body.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"body is not UTF-8 (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc.msg} at line {exc.lineno} column "
                         f"{exc.colno}") from exc


def _fhirpath(root: str, loc: tuple[Any, ...]) -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and _ELEMENT.match(part):
            name = "resourceType" if part == "resource_type" else part
            path += "." + (name[:-5] if name.endswith("_fhir") else name)
        # other parts are pydantic's union/validator labels, not elements
    return path


def validate_resource(data: Any, expected_type: str | None = None,
                      where: str | None = None) -> list[Issue]:
    """Problems with `data` as a FHIR resource (empty when valid).

    `expected_type` is the type the URL names; `where` prefixes expressions for a
    resource inside a Bundle (`Bundle.entry[0].resource`).
    """
    if not isinstance(data, dict):
        return [Issue("error", "structure", "a resource must be a JSON object",
                      [where] if where else [])]
    rtype = data.get("resourceType")
    root = where or (rtype if isinstance(rtype, str) and rtype else expected_type or "Resource")
    if not isinstance(rtype, str) or not rtype:
        return [Issue("error", "required", "resourceType is missing", [f"{root}.resourceType"])]
    if expected_type is not None and rtype != expected_type:
        return [Issue("error", "invalid", f"resourceType {rtype!r} does not match the "
                      f"type {expected_type!r} the request names", [f"{root}.resourceType"])]
    model = _model(rtype)
    if model is None or not rtype[0].isupper():
        return [Issue("error", "not-supported", f"unknown resource type {rtype!r}",
                      [f"{root}.resourceType"])]
    issues: list[Issue] = []
    try:
        model.model_validate(data)
    except ValidationError as exc:
        seen: set[tuple[str, str]] = set()
        for err in exc.errors(include_input=False, include_url=False):
            expression = _fhirpath(root, tuple(err["loc"]))
            message = str(err["msg"]).replace("Value error, ", "")
            if err["type"] == "extra_forbidden":
                message = "unknown element"
            elif err["type"].endswith("missing"):
                message = "required element is missing"
            if (expression, message) in seen:
                continue
            seen.add((expression, message))
            issues.append(Issue("error", _ISSUE_CODE.get(err["type"], "invalid"), message,
                                [expression]))
    for element, allowed in _CODES.get(rtype, {}).items():
        value = data.get(element)
        if value is not None and value not in allowed:
            issues.append(Issue("error", "code-invalid", f"{value!r} is not a valid code "
                                f"(expected one of: {', '.join(sorted(allowed))})",
                                [f"{root}.{element}"]))
    return issues
