"""Message hooks the processor tries before mapping: each owns a kind of message that is
not a charge feed (ADT context updates, FHIR resources). A hook returns a MessageOutcome
when it handled the message, or None to let the mapping run."""

from __future__ import annotations

from typing import Any

from engine.pipeline.adt_hook import AdtContextHook
from engine.pipeline.fhir_handler import FhirChargeHook
from engine.store.base import SqlStore


def default_hooks(config: Any, store: SqlStore) -> list[Any]:
    return [AdtContextHook(store), FhirChargeHook(config, store)]
