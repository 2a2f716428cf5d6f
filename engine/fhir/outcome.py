"""OperationOutcome: issues with severity, code, diagnostics and the FHIRPath `expression`
of the element at fault (e.g. `ChargeItem.occurrenceDateTime`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue. `code` is from http://hl7.org/fhir/issue-type."""

    severity: str  # fatal | error | warning | information
    code: str  # invalid | structure | required | value | not-supported | security | ...
    diagnostics: str
    expression: list[str] = field(default_factory=list)

    def text(self) -> str:
        where = f" at {', '.join(self.expression)}" if self.expression else ""
        return f"{self.diagnostics}{where}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code,
                               "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource (as JSON) carrying `issues`."""
    if not issues:
        issues = [Issue("information", "informational", "All OK")]
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def information(text: str) -> dict[str, Any]:
    """An OperationOutcome with one informational issue (Prefer: return=OperationOutcome)."""
    return operation_outcome([Issue("information", "informational", text)])
