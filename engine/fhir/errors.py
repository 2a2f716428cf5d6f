"""The FHIR error: an HTTP status plus the OperationOutcome issues that explain it."""

from __future__ import annotations

from engine.errors import ChargeBridgeError
from engine.fhir.outcome import Issue


class FhirError(ChargeBridgeError):
    """A FHIR request that cannot be honoured; `status` is the HTTP status to answer."""

    def __init__(self, status: int, issues: list[Issue]) -> None:
        self.status = status
        self.issues = issues
        super().__init__("; ".join(issue.text() for issue in issues) or f"HTTP {status}")

    @classmethod
    def one(cls, status: int, code: str, diagnostics: str,
            expression: str | None = None) -> FhirError:
        """An error with a single issue (severity error)."""
        return cls(status, [Issue("error", code, diagnostics,
                                  [expression] if expression else [])])
