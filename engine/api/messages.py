"""/api/messages: search, detail, reprocess (one, many, or a filter), edit-and-reprocess.

Searching by MRN needs PHI permission and is audited (with a one-way tag of the MRN, not
the MRN). Opening a message unmasked is audited as a PHI view.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError

from engine import audit
from engine.api.auth import Principal, client_ip, require
from engine.api.models import (
    ERRORS,
    MAX_ID,
    ActionResponse,
    EditRequest,
    EditResponse,
    IdPath,
    MessagePage,
    ReprocessRequest,
    outcomes,
)
from engine.api.service import edit_and_reprocess, message_detail, message_summary
from engine.auth.roles import Permission

MAX_BULK = 10000
# Unix seconds, or an ISO 8601 date / date-time (optionally with an offset).
TIME_PATTERN = (r"^(\d{1,12}(\.\d{1,9})?|\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?"
                r"(Z|[+-]\d{2}:\d{2})?)?)$")
_REPROCESSED = "queued for reprocessing"


def parse_time(value: str | None, name: str) -> float | None:
    """Unix seconds or an ISO 8601 date/time (UTC when no offset is given)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise RequestValidationError([{
            "type": "value_error", "loc": ("query", name), "input": value[:40],
            "msg": f"{name}: expected Unix seconds or ISO 8601, got {value[:40]!r}"}]) from exc
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def search(store: Any, principal: Principal, ip: str, *, channel: str | None = None,
           status: str | None = None, control_id: str | None = None,
           message_type: str | None = None, mrn: str | None = None,
           since: float | None = None, until: float | None = None,
           cursor: int | None = None, limit: int = 50) -> dict[str, Any]:
    """One page of the newest messages matching every given filter."""
    if mrn:
        if not principal.can(Permission.PHI):
            raise HTTPException(403, f"role {principal.role!r} may not search by MRN "
                                     "(needs permission 'phi')")
        audit.record(store, principal.name, "phi.search", "messages", detail=
                     f"mrn {audit.fingerprint(mrn)}", ip=ip)
    rows = store.search_messages(channel=channel or None, status=status or None,
                                 control_id=control_id or None,
                                 message_type=message_type or None, mrn=mrn or None,
                                 since=since, until=until, before_id=cursor, limit=limit)
    items = []
    for m in rows:
        item = message_summary(m, masked=True)
        item.pop("mrn")
        items.append(item)
    return {"items": items, "next_cursor": rows[-1].id if len(rows) == limit else None}


def detail(store: Any, principal: Principal, message_id: int, ip: str) -> dict[str, Any]:
    masked = not principal.can(Permission.PHI)
    found = message_detail(store, message_id, masked=masked)
    if found is None:
        raise HTTPException(404, f"message {message_id} not found")
    if not masked:
        audit.record(store, principal.name, "phi.view", f"message:{message_id}", ip=ip)
    return found


def reprocess(store: Any, principal: Principal, ids: list[int], ip: str) -> ActionResponse:
    results: dict[int, str] = {}
    for message_id in ids:
        ok = store.requeue_message(message_id, principal.name)
        results[message_id] = _REPROCESSED if ok else "not found"
        audit.record(store, principal.name, "message.reprocess", f"message:{message_id}",
                     "ok" if ok else "not found", ip=ip)
    return outcomes("message.reprocess", results, {_REPROCESSED})


def router(state: Any) -> APIRouter:
    r = APIRouter(prefix="/api/messages", tags=["messages"], responses=ERRORS)
    store = state.store

    @r.get("", response_model=MessagePage)
    def search_messages(
        request: Request,
        channel: str | None = None, status: str | None = None,
        control_id: str | None = None, message_type: str | None = None,
        mrn: str | None = Query(None, description="Needs PHI permission; audited."),
        since: str | None = Query(None, pattern=TIME_PATTERN,
                                  description="Unix seconds or ISO 8601, inclusive."),
        until: str | None = Query(None, pattern=TIME_PATTERN,
                                  description="Unix seconds or ISO 8601, exclusive."),
        cursor: int | None = Query(None, ge=1, le=MAX_ID,
                                    description="next_cursor of the previous page."),
        limit: int = Query(50, ge=1, le=500),
        principal: Principal = Depends(require(Permission.READ)),
    ) -> dict[str, Any]:
        """Messages newest first, filtered, keyset-paginated (an index serves each filter)."""
        return search(store, principal, client_ip(request), channel=channel, status=status,
                      control_id=control_id, message_type=message_type, mrn=mrn,
                      since=parse_time(since, "since"), until=parse_time(until, "until"),
                      cursor=cursor, limit=limit)

    @r.get("/{message_id}")
    def get_message(message_id: IdPath, request: Request,
                    principal: Principal = Depends(require(Permission.READ))) -> dict[str, Any]:
        """Raw content, HL7 segments with field names or FHIR JSON, charges with findings,
        deliveries with every attempt, and events. PHI is masked for viewers."""
        return detail(store, principal, message_id, client_ip(request))

    @r.post("/{message_id}/reprocess", response_model=ActionResponse)
    def reprocess_one(message_id: IdPath, request: Request,
                      principal: Principal = Depends(require(Permission.ACT))) -> ActionResponse:
        """Map and scrub one message again."""
        return reprocess(store, principal, [message_id], client_ip(request))

    @r.post("/reprocess", response_model=ActionResponse)
    def reprocess_many(body: ReprocessRequest, request: Request,
                       principal: Principal = Depends(require(Permission.ACT))
                       ) -> ActionResponse:
        """Reprocess the listed messages and/or every message a filter selects."""
        ids = list(body.message_ids)
        if body.filter is not None:
            f = body.filter
            cursor = None
            while len(ids) < MAX_BULK:
                page = store.search_messages(
                    channel=f.channel, status=f.status, control_id=f.control_id,
                    message_type=f.message_type, since=f.since, until=f.until,
                    before_id=cursor, limit=min(500, MAX_BULK - len(ids)))
                ids.extend(m.id for m in page)
                if len(page) < 500:
                    break
                cursor = page[-1].id
        return reprocess(store, principal, list(dict.fromkeys(ids))[:MAX_BULK],
                         client_ip(request))

    @r.post("/{message_id}/edit", response_model=EditResponse)
    def edit(message_id: IdPath, body: EditRequest, request: Request,
             principal: Principal = Depends(require(Permission.ACT))) -> EditResponse:
        """Store a corrected copy as a new message linked to the original (kept unchanged)
        and queue it for processing."""
        text = body.raw
        if text.lstrip().startswith("MSH"):  # HL7 separates segments with CR only
            text = text.replace("\r\n", "\r").replace("\n", "\r")
        raw = text.encode("utf-8")
        new_id, outcome = edit_and_reprocess(store, message_id, raw, principal.name)
        audit.record(store, principal.name, "message.edit", f"message:{message_id}",
                     "ok" if new_id else outcome, f"new message {new_id}", client_ip(request))
        if new_id is None:
            raise HTTPException(404, f"message {message_id} not found")
        return EditResponse(original_id=message_id, new_message_id=new_id, outcome=outcome)

    return r
