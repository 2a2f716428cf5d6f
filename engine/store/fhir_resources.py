"""The FHIR resource store: the current version of each resource received over FHIR REST,
every version, identifiers (conditional create, duplicate detection) and references
(a Patient's Coverages). Plain functions over a SqlStore, portable SQL only.

Shared with anything else that needs demographics or insurance by reference (e.g. the ADT
context): `get_resource`, `find_by_identifier`, `find_referencing`.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.errors import StoreError
from engine.fhir.references import iter_references, parse_reference
from engine.store.base import SqlStore

__all__ = ["ResourceWrite", "SaveResult", "StoredResource", "VersionConflict",
           "content_hash", "find_by_identifier", "find_referencing", "get_resource",
           "get_version", "new_id", "save_resources", "set_message_ids"]

_COLUMNS = "resource_type, resource_id, version_id, content, message_id, last_updated"


@dataclass(frozen=True)
class StoredResource:
    """One version of a resource as stored (content carries id and meta.versionId)."""

    resource_type: str
    resource_id: str
    version_id: int
    content: dict[str, Any]
    message_id: int | None
    last_updated: float

    @property
    def key(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


@dataclass
class ResourceWrite:
    """A create-or-update of one resource under a known id."""

    resource_type: str
    resource_id: str
    content: dict[str, Any]
    channel: str
    if_match: int | None = None  # the version the client says it is replacing


@dataclass(frozen=True)
class SaveResult:
    resource: StoredResource
    created: bool  # there was no resource under this id before
    changed: bool  # a new version was written (False: same content as the current one)


class VersionConflict(StoreError):
    """An update named a version (If-Match) that is not the current one."""

    def __init__(self, key: str, expected: int, current: int | None) -> None:
        self.key, self.expected, self.current = key, expected, current
        super().__init__(f"{key}: If-Match names version {expected} but the current version "
                         f"is {current if current is not None else 'none (not found)'}")


def new_id() -> str:
    """A server-assigned logical id."""
    return uuid.uuid4().hex


def content_hash(content: dict[str, Any]) -> str:
    """Hash of what a resource says, ignoring id, meta.versionId and meta.lastUpdated."""
    body = {k: v for k, v in content.items() if k != "id"}
    meta = {k: v for k, v in (body.pop("meta", None) or {}).items()
            if k not in ("versionId", "lastUpdated")}
    if meta:
        body["meta"] = meta
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _instant(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _row(row: Sequence[Any]) -> StoredResource:
    return StoredResource(row[0], row[1], int(row[2]), json.loads(row[3]),
                          None if row[4] is None else int(row[4]), float(row[5]))


def save_resources(store: SqlStore, writes: Sequence[ResourceWrite]) -> list[SaveResult]:
    """Store every write in ONE transaction (a transaction Bundle is all or nothing).

    Content equal to the current version writes nothing (changed=False). Otherwise the
    version is bumped, meta.versionId/lastUpdated and id set, and identifiers and
    references re-indexed. Raises VersionConflict (and stores nothing) on an If-Match miss.
    """
    now = time.time()
    results: list[SaveResult] = []
    with store.transaction() as cur:
        for write in writes:
            results.append(_save_one(store, cur, write, now))
    return results


def _save_one(store: SqlStore, cur: Any, write: ResourceWrite, now: float) -> SaveResult:
    rtype, rid = write.resource_type, write.resource_id
    row = store._exec(cur, f"SELECT {_COLUMNS}, content_hash FROM fhir_resources "
                           "WHERE resource_type = ? AND resource_id = ?", (rtype, rid)).fetchone()
    current = _row(row) if row is not None else None
    if write.if_match is not None and (current is None or current.version_id != write.if_match):
        raise VersionConflict(f"{rtype}/{rid}", write.if_match,
                              current.version_id if current else None)
    digest = content_hash(write.content)
    if current is not None and row[6] == digest:
        return SaveResult(current, created=False, changed=False)
    version = 1 if current is None else current.version_id + 1
    content = {**write.content, "resourceType": rtype, "id": rid,
               "meta": {**(write.content.get("meta") or {}), "versionId": str(version),
                        "lastUpdated": _instant(now)}}
    text = json.dumps(content, ensure_ascii=False)
    store._exec(cur, "INSERT INTO fhir_resources (resource_type, resource_id, version_id, "
                     "channel, content, content_hash, message_id, last_updated) "
                     "VALUES (?, ?, ?, ?, ?, ?, NULL, ?) "
                     "ON CONFLICT (resource_type, resource_id) DO UPDATE SET "
                     "version_id = excluded.version_id, channel = excluded.channel, "
                     "content = excluded.content, content_hash = excluded.content_hash, "
                     "message_id = NULL, last_updated = excluded.last_updated",
                (rtype, rid, version, write.channel, text, digest, now))
    store._exec(cur, "INSERT INTO fhir_resource_versions (resource_type, resource_id, "
                     "version_id, content, message_id, last_updated) "
                     "VALUES (?, ?, ?, ?, NULL, ?)", (rtype, rid, version, text, now))
    _index(store, cur, rtype, rid, content)
    stored = StoredResource(rtype, rid, version, content, None, now)
    return SaveResult(stored, created=current is None, changed=True)


def _index(store: SqlStore, cur: Any, rtype: str, rid: str, content: dict[str, Any]) -> None:
    store._exec(cur, "DELETE FROM fhir_identifiers WHERE resource_type = ? AND resource_id = ?",
                (rtype, rid))
    for ident in content.get("identifier") or []:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            # An identifier names one resource of a type: the latest writer holds it.
            store._exec(cur, "INSERT INTO fhir_identifiers (resource_type, system, value, "
                             "resource_id) VALUES (?, ?, ?, ?) ON CONFLICT (resource_type, "
                             "system, value) DO UPDATE SET resource_id = excluded.resource_id",
                        (rtype, str(ident.get("system") or ""), ident["value"], rid))
    store._exec(cur, "DELETE FROM fhir_references WHERE resource_type = ? AND resource_id = ?",
                (rtype, rid))
    seen: set[tuple[str, str]] = set()
    for path, ref in iter_references(content):
        target = parse_reference(str(ref.get("reference") or ""))
        if target is not None and (path, target.key) not in seen:
            seen.add((path, target.key))
            store._exec(cur, "INSERT INTO fhir_references (resource_type, resource_id, path, "
                             "target) VALUES (?, ?, ?, ?)", (rtype, rid, path, target.key))


def set_message_ids(store: SqlStore, journaled: Sequence[tuple[StoredResource, int]]) -> None:
    """Record which journal message carries each stored version (one transaction)."""
    with store.transaction() as cur:
        for resource, message_id in journaled:
            params = (message_id, resource.resource_type, resource.resource_id,
                      resource.version_id)
            store._exec(cur, "UPDATE fhir_resources SET message_id = ? WHERE resource_type = ? "
                             "AND resource_id = ? AND version_id = ?", params)
            store._exec(cur, "UPDATE fhir_resource_versions SET message_id = ? WHERE "
                             "resource_type = ? AND resource_id = ? AND version_id = ?", params)


def get_resource(store: SqlStore, resource_type: str, resource_id: str) -> StoredResource | None:
    """The current version of Type/id, or None."""
    rows = store._query(f"SELECT {_COLUMNS} FROM fhir_resources WHERE resource_type = ? AND "
                        "resource_id = ?", (resource_type, resource_id))
    return _row(rows[0]) if rows else None


def get_version(store: SqlStore, resource_type: str, resource_id: str,
                version_id: int) -> StoredResource | None:
    """One version of Type/id (vread), or None."""
    rows = store._query(f"SELECT {_COLUMNS} FROM fhir_resource_versions WHERE resource_type = ? "
                        "AND resource_id = ? AND version_id = ?",
                        (resource_type, resource_id, version_id))
    return _row(rows[0]) if rows else None


def find_by_identifier(store: SqlStore, resource_type: str, system: str | None,
                       value: str) -> StoredResource | None:
    """The resource of `resource_type` holding identifier system|value (any system when
    `system` is None; the most recently updated wins if several match)."""
    if system is None:
        rows = store._query("SELECT resource_id FROM fhir_identifiers WHERE resource_type = ? "
                            "AND value = ?", (resource_type, value))
    else:
        rows = store._query("SELECT resource_id FROM fhir_identifiers WHERE resource_type = ? "
                            "AND system = ? AND value = ?", (resource_type, system, value))
    found = [r for r in (get_resource(store, resource_type, row[0]) for row in rows) if r]
    return max(found, key=lambda r: r.last_updated) if found else None


def find_referencing(store: SqlStore, resource_type: str, path: str,
                     target: str) -> list[StoredResource]:
    """Current resources of `resource_type` whose element `path` references `target`
    (`Patient/123`), e.g. ("Coverage", "beneficiary", "Patient/123"); oldest first."""
    rows = store._query(f"SELECT {', '.join('r.' + c for c in _COLUMNS.split(', '))} "
                        "FROM fhir_references x JOIN fhir_resources r ON "
                        "r.resource_type = x.resource_type AND r.resource_id = x.resource_id "
                        "WHERE x.target = ? AND x.path = ? AND x.resource_type = ? "
                        "ORDER BY r.last_updated, r.resource_id", (target, path, resource_type))
    return [_row(r) for r in rows]
