"""The queries and actions behind the admin API and the dashboard (one place, both use it).

Portable SQL only (`?` placeholders, no backend-specific functions) so the same code runs
on SQLite and PostgreSQL. Actions answer per item with what they did.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from typing import Any

from engine.api import phi
from engine.api.hl7_fields import segments
from engine.store.records import CANCEL_PREFIX, FAILED, HELD, QUEUED, SENT, InboundRecord

MESSAGE_STATES = ("RECEIVED", "PROCESSED", "FILTERED", "ERROR")
CHARGE_STATES = ("READY", "HELD", "QUEUED", "SENT", "FAILED")
_OVERVIEW_TTL_SECONDS = 1.0
_overview_cache: dict[int, tuple[float, list[dict[str, Any]]]] = {}
_overview_lock = threading.Lock()


def _per_channel(rows: list[Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for channel, status, count in rows:
        out.setdefault(channel, {})[status] = int(count)
    return out


def per_minute(store: Any, now: float) -> dict[str, list[int]]:
    """Messages received per channel in each of the last 60 minutes (oldest first).

    One scan of the last hour: each SUM counts messages at or after a minute boundary,
    and neighbouring sums subtract into per-minute counts (no dialect-specific floor()).
    """
    start = now - 3600.0
    bounds = [start + 60.0 * i for i in range(60)]
    sums = ", ".join("SUM(CASE WHEN received_at >= ? THEN 1 ELSE 0 END)" for _ in bounds)
    rows = store._query(f"SELECT channel, {sums} FROM messages WHERE received_at >= ? "
                        "GROUP BY channel", (*bounds, start))
    out: dict[str, list[int]] = {}
    for row in rows:
        cumulative = [int(v or 0) for v in row[1:]] + [0]
        out[row[0]] = [cumulative[i] - cumulative[i + 1] for i in range(60)]
    return out


def channel_overview(state: Any, control: Any) -> list[dict[str, Any]]:
    """Every channel with its state, counts, rate, last message time and queue age."""
    store = state.store
    now = time.time()
    with _overview_lock:
        cached = _overview_cache.get(id(store))
        if cached is not None and now - cached[0] < _OVERVIEW_TTL_SECONDS:
            return [{**c, "state": control.state_of(c["name"])} for c in cached[1]]
    store.settle()  # count what was just acknowledged too
    messages = _per_channel(store._query(
        "SELECT channel, status, COUNT(*) FROM messages GROUP BY channel, status"))
    charges = _per_channel(store._query(
        "SELECT channel, status, COUNT(*) FROM charges GROUP BY channel, status"))
    last = dict(store._query("SELECT channel, MAX(received_at) FROM messages GROUP BY channel"))
    oldest = dict(store._query("SELECT channel, MIN(updated_at) FROM charges WHERE status = ? "
                               "GROUP BY channel", (QUEUED,)))
    rates = per_minute(store, now)
    names = [c.name for c in state.config.channels]
    names += sorted(set(messages) - set(names))
    out = []
    for name in names:
        m, c = messages.get(name, {}), charges.get(name, {})
        try:
            channel = state.config.channel(name)
            source_type, destinations = channel.source.type, list(channel.destinations)
        except KeyError:
            source_type, destinations = "", []
        out.append({
            "name": name, "source": source_type, "destinations": destinations,
            "received": sum(m.values()), "processed": m.get("PROCESSED", 0),
            "filtered": m.get("FILTERED", 0), "error": m.get("ERROR", 0),
            "waiting": m.get("RECEIVED", 0), "held": c.get(HELD, 0),
            "queued": c.get(QUEUED, 0), "sent": c.get(SENT, 0), "failed": c.get(FAILED, 0),
            "per_minute": rates.get(name, [0] * 60), "last_message_at": last.get(name),
            "oldest_queued_age_seconds": (now - oldest[name]) if oldest.get(name) else None,
        })
    with _overview_lock:
        _overview_cache[id(store)] = (now, out)
    return [{**c, "state": control.state_of(c["name"])} for c in out]


def message_summary(m: Any, *, masked: bool) -> dict[str, Any]:
    return {"id": m.id, "channel": m.channel, "status": m.status, "received_at": m.received_at,
            "control_id": m.control_id, "message_type": m.message_type,
            "transport": m.transport, "reason": phi.mask_text(m.reason, masked),
            "mrn": (phi.MASK if m.mrn else None) if masked else m.mrn,
            "edited_from": m.meta.get("edited_from")}


def _event_dict(e: Any, masked: bool) -> dict[str, Any]:
    return {"at": e.at, "entity": e.entity, "entity_id": e.entity_id, "status": e.status,
            "reason": phi.mask_text(e.reason, masked)}


def message_detail(store: Any, message_id: int, *, masked: bool) -> dict[str, Any] | None:
    """A message with its raw content, parsed view, charges, deliveries and events."""
    m = store.get_message(message_id)
    if m is None:
        return None
    if phi.is_json(m.raw):
        try:
            doc = json.loads(m.raw)
            parsed: dict[str, Any] = {"format": "fhir", "json": json.dumps(
                phi.mask_fhir(doc) if masked else doc, indent=2)}
        except ValueError:
            parsed = {"format": "text", "json": None}
        segs: list[dict[str, Any]] = []
    else:
        parsed = {"format": "hl7", "json": None}
        segs = segments(m.raw, masked=masked)
    charges = []
    for charge, status, findings in store.charges_for_message(message_id):
        data = charge.to_json_dict()
        deliveries = []
        for d in store.deliveries_for_charge(charge.charge_id):
            d = dict(d)
            if masked:
                d["response"] = phi.mask_text(d.get("response"), masked)
                d["detail"] = phi.mask_text(d.get("detail"), masked)
            d["result"] = json.loads(d["result"] or "{}") if isinstance(d["result"], str) \
                else d["result"]
            d["attempts_log"] = [_event_dict(e, masked)
                                 for e in store.events_for("delivery", d["id"])]
            deliveries.append(d)
        charges.append({
            "charge_id": charge.charge_id, "status": status,
            "amount": data.get("amount"), "procedure": (data.get("procedure") or {}).get("code"),
            "data": phi.mask_charge(data) if masked else data,
            "findings": phi.mask_findings([f.model_dump() for f in findings], masked),
            "deliveries": deliveries,
            "events": [_event_dict(e, masked)
                       for e in store.events_for("charge", charge.charge_id)],
        })
    return {**message_summary(m, masked=masked), "sender": m.sender,
            "meta": phi.mask_meta(m.meta, masked),
            "counts": m.counts, "masked": masked, "raw": phi.raw_for(m.raw, masked=masked),
            "parsed": parsed, "segments": segs, "charges": charges,
            "events": [_event_dict(e, masked)
                       for e in store.events_for("message", message_id)]}


# -- worklists --------------------------------------------------------------------------
_SORTS = {"amount", "age"}


def _order(column_amount: str, column_created: str, sort: str, order: str) -> str:
    if sort not in _SORTS or order not in ("asc", "desc"):
        raise ValueError("sort must be amount|age and order asc|desc")
    if sort == "amount":
        return (f"CASE WHEN {column_amount} IS NULL THEN 1 ELSE 0 END, "
                f"CAST({column_amount} AS NUMERIC) {order.upper()}")
    # Age descending means the oldest first.
    return f"{column_created} {'ASC' if order == 'desc' else 'DESC'}"


def held_charges(store: Any, *, sort: str = "age", order: str = "desc", limit: int = 100,
                 offset: int = 0, masked: bool = True) -> dict[str, Any]:
    """HELD charges, waiting for a person, sortable by amount or age."""
    now = time.time()
    total = int(store._query("SELECT COUNT(*) FROM charges WHERE status = ?", (HELD,))[0][0])
    rows = store._query(
        "SELECT charge_id, message_id, channel, amount, created_at, findings, data, "
        f"transaction_type FROM charges WHERE status = ? ORDER BY "
        f"{_order('amount', 'created_at', sort, order)}, charge_id LIMIT ? OFFSET ?",
        (HELD, limit, offset))
    items = []
    for r in rows:
        data = json.loads(r[6])
        items.append({"charge_id": r[0], "message_id": r[1], "channel": r[2], "amount": r[3],
                      "age_seconds": now - r[4], "created_at": r[4],
                      "findings": phi.mask_findings(json.loads(r[5]), masked),
                      "transaction_type": r[7],
                      "procedure": (data.get("procedure") or {}).get("code"),
                      "service_date": data.get("service_date")})
    return {"total": total, "items": items}


def dead_letters(store: Any, *, sort: str = "age", order: str = "desc", limit: int = 100,
                 offset: int = 0, destination: str | None = None,
                 masked: bool = True) -> dict[str, Any]:
    """FAILED deliveries (retries exhausted), sortable by the charge amount or age."""
    now = time.time()
    where, params = "d.status = ? AND (d.detail IS NULL OR d.detail NOT LIKE ?)", [
        FAILED, CANCEL_PREFIX + "%"]
    if destination is not None:
        where += " AND d.destination = ?"
        params.append(destination)
    total = int(store._query(f"SELECT COUNT(*) FROM deliveries d WHERE {where}", params)[0][0])
    rows = store._query(
        "SELECT d.id, d.charge_id, d.destination, d.attempts, d.detail, d.created_at, "
        "d.updated_at, c.amount, c.message_id, c.channel FROM deliveries d JOIN charges c ON "
        f"c.charge_id = d.charge_id WHERE {where} ORDER BY "
        f"{_order('c.amount', 'd.created_at', sort, order)}, d.id LIMIT ? OFFSET ?",
        (*params, limit, offset))
    items = [{"delivery_id": r[0], "charge_id": r[1], "destination": r[2], "attempts": r[3],
              "detail": phi.mask_text(r[4], masked), "created_at": r[5], "failed_at": r[6],
              "age_seconds": now - r[5],
              "amount": r[7], "message_id": r[8], "channel": r[9]} for r in rows]
    return {"total": total, "items": items}


# -- actions -----------------------------------------------------------------------------
def resend_delivery(store: Any, delivery_id: int, who: str) -> str:
    """Queue a FAILED or SENT delivery again, for its one destination only.

    The batch id is cleared so the destination treats it as new work, and the attempt
    count restarts; the events keep every earlier attempt.
    """
    now = time.time()
    with store.transaction() as cur:
        row = store._exec(cur, "SELECT charge_id, status, destination, detail FROM deliveries "
                               "WHERE id = ?", (delivery_id,)).fetchone()
        if row is None:
            return "not found"
        charge_id, status, destination, detail = row
        if status not in (FAILED, SENT):
            return f"not resendable (status {status})"
        if status == FAILED and (detail or "").startswith(CANCEL_PREFIX):
            # A credit cancelled this charge before it was billed: resending would bill it.
            return "not resendable (cancelled by a credit before it was sent)"
        store._exec(cur, "UPDATE deliveries SET status = ?, attempts = 0, next_attempt_at = ?, "
                         "lease_owner = NULL, lease_until = NULL, batch_id = NULL, "
                         "updated_at = ? WHERE id = ? AND status = ?",
                    (QUEUED, now, now, delivery_id, status))
        store._event(cur, "delivery", delivery_id, QUEUED, f"resend by {who}", now)
        updated = store._exec(cur, "UPDATE charges SET status = ?, updated_at = ? "
                                   "WHERE charge_id = ? AND status <> ?",
                              (QUEUED, now, charge_id, QUEUED)).rowcount
        if updated:
            store._event(cur, "charge", charge_id, QUEUED,
                         f"resend to {destination} by {who}", now)
    return "queued for resend"


def failed_delivery_ids(store: Any, destination: str | None = None,
                        limit: int = 10000) -> list[int]:
    # Deliveries a credit cancelled are not dead letters: retrying them would bill a charge
    # the credit reversed.
    where, params = "status = ? AND (detail IS NULL OR detail NOT LIKE ?)", [FAILED,
                                                                            CANCEL_PREFIX + "%"]
    if destination is not None:
        where += " AND destination = ?"
        params.append(destination)
    rows = store._query(f"SELECT id FROM deliveries WHERE {where} ORDER BY id LIMIT ?",
                        (*params, limit))
    return [int(r[0]) for r in rows]


def edit_and_reprocess(store: Any, message_id: int, raw: bytes, who: str
                       ) -> tuple[int | None, str]:
    """Store an edited copy as a NEW message (meta edited_from) and queue it; the
    original stays exactly as received."""
    original = store.get_message(message_id)
    if original is None:
        return None, "not found"
    control_id = message_type = None
    if not phi.is_json(raw):
        from engine.errors import HL7ReadError
        from engine.hl7.reader import parse

        try:
            msg = parse(raw)
            control_id, message_type = msg.control_id, msg.message_type
        except HL7ReadError:
            pass
    record = InboundRecord(channel=original.channel, raw=raw, transport=original.transport,
                           peer=f"edit:{who}", sender=original.sender, control_id=control_id,
                           message_type=message_type,
                           meta={**original.meta, "edited_from": message_id, "edited_by": who})
    new_id = store.journal([record])[0].message_id
    with store.transaction() as cur:
        store._event(cur, "message", message_id, original.status,
                     f"edited copy stored as message {new_id} by {who}", time.time())
    return new_id, "edited copy queued for processing"


# -- store size and retention ------------------------------------------------------------
def store_size(store: Any) -> dict[str, Any]:
    """Bytes the store occupies: the SQLite files, or pg_database_size on PostgreSQL."""
    path = getattr(store, "path", None)
    if path is not None:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(f"{path}{suffix}")
        return {"backend": "sqlite", "bytes": total}
    try:
        rows = store._query("SELECT pg_database_size(current_database())")
        return {"backend": "postgresql", "bytes": int(rows[0][0])}
    except Exception as exc:  # a store without the function: show why, don't fail the page
        return {"backend": type(store).__name__, "bytes": None, "error": str(exc)[:200]}


def retention_view(state: Any) -> dict[str, Any]:
    """Per-channel retention settings, the store's size and the pruning worker's results."""
    store = state.store
    oldest = dict(store._query("SELECT channel, MIN(received_at) FROM messages "
                               "GROUP BY channel"))
    # Pruning nulls `raw` and keeps the row: the count of such rows is its result so far.
    pruned = dict(store._query("SELECT channel, COUNT(*) FROM messages WHERE raw IS NULL "
                               "GROUP BY channel"))
    channels = [{"name": c.name, "retention_days": c.retention_days,
                 "oldest_message_at": oldest.get(c.name),
                 "pruned_messages": int(pruned.get(c.name, 0))} for c in state.config.channels]
    pruning: Any = None
    try:
        import importlib

        retention = importlib.import_module("engine.store.retention")
        status_fn = getattr(retention, "retention_status", None)
        pruning = status_fn(store) if callable(status_fn) else {
            "installed": True, "pruned_messages": sum(int(v) for v in pruned.values())}
    except ImportError:
        pruning = None
    except Exception as exc:  # the worker's own trouble is shown, not raised
        pruning = {"error": str(exc)[:200]}
    return {"store": store_size(store), "channels": channels, "pruning": pruning}
