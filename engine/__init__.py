"""ChargeBridge: an HL7 v2 / FHIR R4 interface engine that routes charges into PM billing."""

__version__ = "0.1.0"
