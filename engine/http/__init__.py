"""The HTTP listener: health, HL7 over HTTP, FHIR, the admin API and the dashboard."""
