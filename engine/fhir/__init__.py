"""FHIR R4 inbound: validation, OperationOutcome, references, the CapabilityStatement and
the REST interactions (create, update, conditional create, transaction/batch Bundles).

The HTTP surface lives in engine.fhir.router; the resource store in
engine.store.fhir_resources; turning ChargeItems into charges in
engine.pipeline.fhir_handler.
"""

from __future__ import annotations

SUPPORTED_TYPES: tuple[str, ...] = ("ChargeItem", "Encounter", "Patient", "Coverage",
                                    "Practitioner", "Organization", "Account")
"""Resource types the FHIR source can accept (a channel may accept fewer)."""

FHIR_VERSION = "4.0.1"

__all__ = ["FHIR_VERSION", "SUPPORTED_TYPES"]
