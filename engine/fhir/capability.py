"""The CapabilityStatement a FHIR channel serves at `[base]/metadata`: exactly the types,
interactions and formats this endpoint accepts — nothing it would refuse."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import engine
from engine.fhir import FHIR_VERSION

_CONDITIONAL_PARAMS = [
    {"name": "identifier", "type": "token",
     "documentation": "If-None-Exist only: identifier=system|value or identifier=value."},
    {"name": "_id", "type": "token", "documentation": "If-None-Exist only: the logical id."},
]


def capability_statement(base_url: str, resource_types: Sequence[str],
                         auth_required: bool) -> dict[str, Any]:
    """The CapabilityStatement (JSON) for one FHIR channel served at `base_url`."""
    resources = [{
        "type": rtype,
        "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "create"},
                        {"code": "update"}],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchParam": _CONDITIONAL_PARAMS,
        "documentation": ("A create whose identifier matches a stored resource of this type "
                          "updates that resource instead of making a second one."),
    } for rtype in resource_types]
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": "Inbound charge feed: resources are journaled before the answer.",
        "resource": resources,
        "interaction": [{"code": "transaction"}, {"code": "batch"}],
    }
    if auth_required:
        rest["security"] = {"cors": False, "description": (
            "Every request needs 'Authorization: Bearer <token>' with a ChargeBridge API "
            "token (chargebridge token add NAME --role operator).")}
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(UTC).date().isoformat(),
        "publisher": "ChargeBridge",
        "kind": "instance",
        "software": {"name": "ChargeBridge", "version": engine.__version__},
        "implementation": {"description": "ChargeBridge FHIR R4 inbound endpoint",
                           "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    }
