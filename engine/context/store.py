"""Keeping and reading ADT context in the store (table `adt_context`, migration 0010).

Saving merges: a field an ADT message leaves empty keeps what an earlier message said,
and each field remembers the message that set it. A message older (MSH-7) than the one
that last wrote a row does not overwrite it, so a late resend cannot roll a patient back.
All rows of one message are written in one transaction; re-saving the same message (a
reprocess) is harmless.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from engine.context.extract import AdtContext

__all__ = ["KnownContext", "load_context", "save_context"]

PATIENT, VISIT, COVERAGE = "patient", "visit", "coverage"


@dataclass
class KnownContext:
    """What the store knows for one MRN (and visit): field -> value and field -> message."""

    fields: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    coverage: list[dict[str, Any]] = field(default_factory=list)
    coverage_source: int | None = None

    @property
    def empty(self) -> bool:
        return not self.fields and not self.coverage


def _row(store: Any, cur: Any, kind: str, mrn: str,
         visit: str) -> tuple[dict[str, Any], str] | None:
    row = store._exec(cur, "SELECT data, message_time FROM adt_context WHERE kind = ? AND "
                           "mrn = ? AND visit = ?", (kind, mrn, visit)).fetchone()
    return None if row is None else (json.loads(row[0]), row[1] or "")


def _write(store: Any, cur: Any, kind: str, mrn: str, visit: str, data: dict[str, Any],
           message_id: int, message_time: str, now: float) -> None:
    text = json.dumps(data, sort_keys=True)
    store._exec(cur, "INSERT INTO adt_context (kind, mrn, visit, data, message_id, message_time, "
                     "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, mrn, visit) "
                     "DO UPDATE SET data = ?, message_id = ?, message_time = ?, updated_at = ?",
                (kind, mrn, visit, text, message_id, message_time, now,
                 text, message_id, message_time, now))


def _stale(incoming: str, existing: str) -> bool:
    return bool(incoming and existing and incoming < existing)


def save_context(store: Any, ctx: AdtContext, message_id: int) -> list[str]:
    """Merge one ADT message's context into the store; returns the kinds written."""
    if not ctx.mrn:
        return []
    mrn, visit = ctx.mrn, ctx.visit or ""
    now = time.time()
    written: list[str] = []
    with store.transaction() as cur:
        lock = getattr(store, "_lock_keys", None)
        if lock is not None:  # a server backend serializes writers of the same patient
            lock(cur, [f"adt_context:{mrn}"])
        merges = [(PATIENT, "", ctx.patient)]
        if visit:
            merges.append((VISIT, visit, ctx.encounter))
        for kind, key, values in merges:
            if not values:
                continue
            existing = _row(store, cur, kind, mrn, key)
            data: dict[str, Any] = {"fields": {}, "sources": {}}
            if existing is not None:
                if _stale(ctx.message_time, existing[1]):
                    continue
                data = existing[0]
            data["fields"].update(values)
            data["sources"].update({name: message_id for name in values})
            _write(store, cur, kind, mrn, key, data, message_id, ctx.message_time, now)
            written.append(kind)
        if ctx.coverage:
            payload = {"coverage": ctx.coverage, "source": message_id}
            for key in ({"", visit} if visit else {""}):
                existing = _row(store, cur, COVERAGE, mrn, key)
                if existing is not None and _stale(ctx.message_time, existing[1]):
                    continue
                _write(store, cur, COVERAGE, mrn, key, payload, message_id, ctx.message_time,
                       now)
            written.append(COVERAGE)
    return written


def load_context(store: Any, mrn: str, visit: str | None) -> KnownContext:
    """The patient's context, the visit's on top, and the visit's coverage (else the
    patient's latest)."""
    known = KnownContext()
    keys = [(PATIENT, "")] + ([(VISIT, visit)] if visit else [])
    keys += [(COVERAGE, visit)] if visit else []
    keys.append((COVERAGE, ""))
    clauses = " OR ".join("(kind = ? AND visit = ?)" for _ in keys)
    params: list[Any] = [mrn]
    for kind, key in keys:
        params += [kind, key]
    rows = store._query(f"SELECT kind, visit, data FROM adt_context WHERE mrn = ? AND "
                        f"({clauses})", params)
    found = {(r[0], r[1]): json.loads(r[2]) for r in rows}
    for kind, key in keys:
        data = found.get((kind, key))
        if data is None:
            continue
        if kind == COVERAGE:
            if not known.coverage:
                known.coverage = list(data.get("coverage", []))
                known.coverage_source = data.get("source")
            continue
        known.fields.update(data.get("fields", {}))
        known.sources.update(data.get("sources", {}))
    return known
