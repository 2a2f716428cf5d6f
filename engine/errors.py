"""The exception tree: every error ChargeBridge raises derives from ChargeBridgeError.

Messages state the broken rule and where (file:line, segment-field, FHIR path).
"""

from __future__ import annotations


class ChargeBridgeError(Exception):
    """Root of every error raised by ChargeBridge."""


class ConfigError(ChargeBridgeError):
    """A configuration or mapping file is invalid.

    `problems` holds one `file:line:col: where: what` string per problem found.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class HL7ReadError(ChargeBridgeError):
    """Bytes that cannot be read as an HL7 v2 message; `where` names segment-field."""

    def __init__(self, message: str, where: str = "") -> None:
        self.where = where
        super().__init__(message)


class MappingError(ChargeBridgeError):
    """A message cannot be mapped (e.g. a lookup policy of `fail`)."""


class StoreError(ChargeBridgeError):
    """The message store failed or is in an unexpected state."""


class StoreBusy(StoreError):
    """Another writer holds the store's write lock and the caller asked not to wait."""


class DeliveryError(ChargeBridgeError):
    """A destination could not deliver; `retryable` tells the runner whether to retry."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)
