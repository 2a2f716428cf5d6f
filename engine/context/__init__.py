"""ADT context: patient, visit and coverage kept from ADT messages (A01, A03, A04, A08,
A28, A31), keyed by MRN and visit number, and used to enrich and check DFT charges."""

from __future__ import annotations

from engine.context.enrich import MISMATCH_RULE, enrich
from engine.context.extract import AdtContext, extract_context
from engine.context.store import KnownContext, load_context, save_context

__all__ = ["MISMATCH_RULE", "AdtContext", "KnownContext", "enrich", "extract_context",
           "load_context", "save_context"]
