"""Masking PHI for roles that may not see it: charges, FHIR JSON and raw messages.

What counts as PHI here: patient names, birth dates, addresses, phone numbers, MRNs and
other identifiers, member and group ids, subscriber details, visit numbers. Masking
replaces values (the shape of the data stays, so a viewer still sees what is present).
"""

from __future__ import annotations

import json
from typing import Any

from engine.api.hl7_fields import MASK, masked_raw

# FHIR element names whose whole value is PHI wherever they appear.
_FHIR_PHI_KEYS = frozenset({
    "name", "birthDate", "address", "telecom", "identifier", "subscriberId", "text",
    "photo", "contact", "display", "deceasedDateTime", "multipleBirthInteger",
})


def _mask_value(value: Any) -> Any:
    return None if value is None else MASK


def mask_charge(charge: dict[str, Any]) -> dict[str, Any]:
    """A copy of a charge's JSON with the patient, subscriber and visit ids masked."""
    data = json.loads(json.dumps(charge))
    patient = data.get("patient") or {}
    for key in ("mrn", "last_name", "first_name", "middle_name", "birth_date"):
        if key in patient:
            patient[key] = _mask_value(patient[key])
    if isinstance(patient.get("address"), dict):
        patient["address"] = {k: _mask_value(v) for k, v in patient["address"].items()}
    encounter = data.get("encounter") or {}
    if "id" in encounter:
        encounter["id"] = _mask_value(encounter["id"])
    for cov in data.get("coverage") or []:
        for key in ("member_id", "group_number"):
            if key in cov:
                cov[key] = _mask_value(cov[key])
        if isinstance(cov.get("subscriber"), dict):
            cov["subscriber"] = {k: _mask_value(v) for k, v in cov["subscriber"].items()}
    if "prior_authorization" in data:
        data["prior_authorization"] = _mask_value(data["prior_authorization"])
    return data


def mask_text(text: Any, masked: bool) -> Any:
    """Free text (reasons, finding messages, delivery details) for a viewer: such text can
    quote a rejected value or a PM system's answer, so a viewer sees only that it exists."""
    return MASK if masked and text else text


def mask_findings(findings: list[dict[str, Any]], masked: bool) -> list[dict[str, Any]]:
    """Findings keep rule, severity and field for a viewer; the message is masked."""
    if not masked:
        return findings
    return [{**f, "message": MASK} for f in findings]


_SAFE_META = frozenset({"file", "index", "offset", "batch", "edited_from", "resource_type"})


def mask_meta(meta: dict[str, Any], masked: bool) -> dict[str, Any]:
    """Message meta for a viewer: positions and ids stay, any other value is masked."""
    if not masked:
        return meta
    return {k: (v if k in _SAFE_META else _mask_value(v)) for k, v in meta.items()}


def mask_fhir(value: Any) -> Any:
    """FHIR JSON with every PHI element's value masked, recursively."""
    if isinstance(value, dict):
        return {k: (MASK if k in _FHIR_PHI_KEYS else mask_fhir(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_fhir(v) for v in value]
    return value


def is_json(raw: bytes) -> bool:
    return raw.lstrip()[:1] in (b"{", b"[")


def raw_for(raw: bytes, *, masked: bool) -> str:
    """The raw message as text: unchanged, or with PHI masked for a viewer."""
    if not masked:
        return raw.decode("utf-8", "replace")
    if is_json(raw):
        try:
            return json.dumps(mask_fhir(json.loads(raw)), indent=2)
        except ValueError:
            return MASK
    if raw.lstrip().startswith(b"MSH"):
        return masked_raw(raw)
    return MASK
