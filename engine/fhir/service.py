"""The FHIR REST interactions of one channel, apart from HTTP: create (with If-None-Exist),
update (with If-Match), read, vread and transaction/batch Bundles.

Order of work for every accepted resource — the durability promise:
  1. validate (nothing stored when invalid; the raw body is journaled with status ERROR);
  2. decide its id (If-None-Exist match, identifier match, the URL's id, or a new one);
  3. rewrite `urn:uuid:` references to the ids decided in step 2 (Bundles);
  4. store the new version(s) in the resource store in ONE transaction;
  5. journal each new version (transport "fhir") through the group committer;
  6. record the journal message id on the version; only then answer 2xx.
A crash between 4 and 5 leaves a version without message id: the client, having no 2xx,
resends, and the unchanged-but-unjournaled version is journaled then (never twice).
A create whose identifier matches a stored resource of its type is that resource: the same
content answers 200 without a new version, so a resent ChargeItem never makes a second
charge.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import structlog

from engine.fhir.errors import FhirError
from engine.fhir.outcome import Issue
from engine.fhir.references import ID_PATTERN, rewrite_references
from engine.fhir.validation import is_fhir_type, validate_resource
from engine.store import fhir_resources as rs
from engine.store.base import SqlStore
from engine.store.records import ERROR, InboundRecord

log = structlog.get_logger("chargebridge.fhir")

TRANSPORT = "fhir"


@dataclass(frozen=True)
class Caller:
    """Who sent the request: the API token's name (or "anonymous") and the peer address."""

    name: str
    peer: str = ""


@dataclass
class EntryResult:
    """The outcome of one create/update: an HTTP status and the resource version."""

    status: int
    resource: rs.StoredResource | None = None
    issues: list[Issue] = field(default_factory=list)
    message_id: int | None = None


@dataclass
class _Planned:
    index: int
    method: str  # POST | PUT
    resource_type: str
    resource: dict[str, Any]
    resource_id: str = ""
    full_url: str | None = None
    if_none_exist: str | None = None
    if_match: int | None = None
    existing: rs.StoredResource | None = None  # an If-None-Exist match: nothing to write
    where: str = ""  # FHIRPath prefix for issues


class FhirService:
    """The interactions of one FHIR channel against the store and the journal."""

    def __init__(self, channel: str, store: SqlStore, committer: Any,
                 accepted_types: Sequence[str], duplicate_window_seconds: float = 0.0) -> None:
        self.channel = channel
        self.store = store
        self.committer = committer  # engine.store.group_commit.GroupCommitter
        self.accepted_types = tuple(accepted_types)
        self.duplicate_window_seconds = duplicate_window_seconds

    # -- checks ------------------------------------------------------------------
    def check_type(self, resource_type: str) -> None:
        """404 for a name that is no FHIR type; 405 for a type this channel refuses."""
        if resource_type in self.accepted_types:
            return
        if is_fhir_type(resource_type):
            raise FhirError.one(405, "not-supported", f"this endpoint does not accept "
                                f"{resource_type} resources (accepted: "
                                f"{', '.join(self.accepted_types)})")
        raise FhirError.one(404, "not-supported", f"unknown resource type {resource_type!r}")

    # -- interactions --------------------------------------------------------------
    async def create(self, resource_type: str, resource: Any, caller: Caller,
                     if_none_exist: str | None = None) -> EntryResult:
        """POST [base]/{type}: 201 for a new resource, 200 when it already exists."""
        self.check_type(resource_type)
        resource = _without_server_meta(resource)
        _raise_invalid(validate_resource(resource, resource_type))
        plan = _Planned(0, "POST", resource_type, dict(resource), if_none_exist=if_none_exist)
        await asyncio.to_thread(self._decide_id, plan)
        return (await self._write([plan], caller, interaction="create"))[0]

    async def update(self, resource_type: str, resource_id: str, resource: Any, caller: Caller,
                     if_match: int | None = None) -> EntryResult:
        """PUT [base]/{type}/{id}: 200 for a new version, 201 when the id was new."""
        self.check_type(resource_type)
        if not ID_PATTERN.match(resource_id):
            raise FhirError.one(400, "value", f"{resource_id!r} is not a valid FHIR id")
        resource = _without_server_meta(resource)
        _raise_invalid(validate_resource(resource, resource_type))
        body_id = resource.get("id")
        if body_id is not None and body_id != resource_id:
            raise FhirError.one(400, "invalid", f"the resource id {body_id!r} differs from the "
                                f"id {resource_id!r} in the URL", f"{resource_type}.id")
        plan = _Planned(0, "PUT", resource_type, dict(resource), resource_id, if_match=if_match)
        return (await self._write([plan], caller, interaction="update"))[0]

    async def read(self, resource_type: str, resource_id: str,
                   version_id: int | None = None) -> rs.StoredResource:
        """GET [base]/{type}/{id}[/_history/{vid}]; 404 when absent."""
        if resource_type not in self.accepted_types:
            raise FhirError.one(404, "not-supported", f"resource type {resource_type!r} is not "
                                "served by this endpoint")
        if version_id is None:
            found = await asyncio.to_thread(rs.get_resource, self.store, resource_type,
                                            resource_id)
        else:
            found = await asyncio.to_thread(rs.get_version, self.store, resource_type,
                                            resource_id, version_id)
        if found is None:
            raise FhirError.one(404, "not-found", f"{resource_type}/{resource_id}"
                                + (f"/_history/{version_id}" if version_id else "")
                                + " is not known")
        return found

    async def bundle(self, bundle: Any, caller: Caller) -> tuple[str, list[EntryResult]]:
        """POST [base] with a transaction or batch Bundle; returns (type, entry results).

        A transaction stores all entries or none (any problem raises FhirError); a batch
        answers each entry on its own.
        """
        if isinstance(bundle, dict) and isinstance(bundle.get("entry"), list):
            bundle = {**bundle, "entry": [
                {**e, "resource": _without_server_meta(e["resource"])}
                if isinstance(e, dict) and "resource" in e else e for e in bundle["entry"]]}
        issues = validate_resource(bundle, "Bundle")
        kind = bundle.get("type") if isinstance(bundle, dict) else None
        if not issues and kind not in ("transaction", "batch"):
            issues = [Issue("error", "not-supported", f"Bundle.type must be transaction or "
                            f"batch, got {kind!r}", ["Bundle.type"])]
        if issues:
            raise FhirError(400, issues)
        entries = bundle.get("entry") or []
        if kind == "transaction":
            plans, problems = [], []
            for index, entry in enumerate(entries):
                try:
                    plans.append(self._entry_plan(index, entry))
                except FhirError as exc:
                    problems.extend(exc.issues)
            if problems:
                raise FhirError(400, problems)
            await asyncio.to_thread(self._decide_ids, plans)
            return kind, await self._write(plans, caller, interaction="transaction")
        return "batch", await self._batch(entries, caller)

    async def _batch(self, entries: list[Any], caller: Caller) -> list[EntryResult]:
        results: list[EntryResult] = []
        resolved: dict[str, str] = {}  # fullUrl -> Type/id of entries already stored
        for index, entry in enumerate(entries):
            try:
                plan = self._entry_plan(index, entry)
                rewrite_references(plan.resource, resolved)
                await asyncio.to_thread(self._decide_ids, [plan])
                result = (await self._write([plan], caller, interaction="batch"))[0]
                if plan.full_url and result.resource is not None:
                    resolved[plan.full_url] = result.resource.key
            except FhirError as exc:
                raw = json.dumps(entry, ensure_ascii=False).encode("utf-8")
                await self.journal_error(raw, exc, caller, {"bundle_entry": index})
                result = EntryResult(exc.status, issues=exc.issues)
            results.append(result)
        return results

    # -- the steps -----------------------------------------------------------------
    def _entry_plan(self, index: int, entry: Any) -> _Planned:
        where = f"Bundle.entry[{index}]"
        if not isinstance(entry, dict):
            raise FhirError.one(400, "structure", "an entry must be an object", where)
        request = entry.get("request") or {}
        method = str(request.get("method") or "").upper()
        url = str(request.get("url") or "")
        if method not in ("POST", "PUT"):
            raise FhirError.one(405 if method else 400, "not-supported",
                                f"entry method {method or '(none)'} is not supported here "
                                "(POST and PUT are)", f"{where}.request.method")
        path, _, query = url.partition("?")
        if query:
            raise FhirError.one(400, "not-supported", "conditional update/create by URL is "
                                "not supported; use ifNoneExist", f"{where}.request.url")
        parts = [p for p in path.split("/") if p]
        resource = entry.get("resource")
        if method == "POST" and len(parts) >= 1:
            rtype, rid = parts[-1], ""
        elif method == "PUT" and len(parts) >= 2:
            rtype, rid = parts[-2], parts[-1]
        else:
            raise FhirError.one(400, "invalid", f"request.url {url!r} does not fit {method} "
                                "(POST Type, PUT Type/id)", f"{where}.request.url")
        try:
            self.check_type(rtype)
        except FhirError as exc:
            raise FhirError(exc.status, [Issue(i.severity, i.code, i.diagnostics,
                                               [f"{where}.request.url"]) for i in exc.issues]
                            ) from exc
        _raise_invalid(validate_resource(resource, rtype, f"{where}.resource"))
        assert isinstance(resource, dict)
        if rid and not ID_PATTERN.match(rid):
            raise FhirError.one(400, "value", f"{rid!r} is not a valid FHIR id",
                                f"{where}.request.url")
        if_match = _version_from_etag(request.get("ifMatch"), f"{where}.request.ifMatch")
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        return _Planned(index, method, rtype, dict(resource), rid, full_url,
                        request.get("ifNoneExist"), if_match, where=where)

    def _decide_ids(self, plans: list[_Planned]) -> None:
        for plan in plans:
            self._decide_id(plan)
        replacements: dict[str, str] = {}
        for plan in plans:
            key = f"{plan.resource_type}/{plan.resource_id}"
            if plan.full_url:
                replacements[plan.full_url] = key
        for plan in plans:
            rewrite_references(plan.resource, replacements)

    def _decide_id(self, plan: _Planned) -> None:
        """Runs in a worker thread (store reads)."""
        if plan.method == "PUT":
            return
        if plan.if_none_exist:
            matches = self._search(plan.resource_type, plan.if_none_exist, plan.where)
            if len(matches) > 1:
                raise FhirError.one(412, "multiple-matches", f"If-None-Exist matches "
                                    f"{len(matches)} {plan.resource_type} resources",
                                    plan.where or None)
            if matches:
                plan.existing = matches[0]
                plan.resource_id = matches[0].resource_id
                return
        for ident in plan.resource.get("identifier") or []:
            if isinstance(ident, dict) and isinstance(ident.get("value"), str):
                found = rs.find_by_identifier(self.store, plan.resource_type,
                                              str(ident.get("system") or ""), ident["value"])
                if found is not None:
                    plan.resource_id = found.resource_id
                    return
        plan.resource_id = rs.new_id()

    def _search(self, resource_type: str, criteria: str, where: str) -> list[rs.StoredResource]:
        found: dict[str, rs.StoredResource] | None = None
        for name, value in parse_qsl(criteria.lstrip("?"), keep_blank_values=True):
            if name == "identifier":
                system, bar, code = value.rpartition("|")
                hit = rs.find_by_identifier(self.store, resource_type, system if bar else None,
                                            code)
            elif name == "_id":
                hit = rs.get_resource(self.store, resource_type, value)
            else:
                raise FhirError.one(400, "not-supported", f"search parameter {name!r} is not "
                                    "supported in If-None-Exist (identifier and _id are)",
                                    f"{where}.request.ifNoneExist" if where else None)
            matches = {hit.resource_id: hit} if hit is not None else {}
            found = matches if found is None else {k: v for k, v in found.items()
                                                   if k in matches}
        if found is None:
            raise FhirError.one(400, "invalid", "If-None-Exist has no search parameter")
        return list(found.values())

    async def _write(self, plans: list[_Planned], caller: Caller,
                     interaction: str) -> list[EntryResult]:
        writes = [rs.ResourceWrite(p.resource_type, p.resource_id, p.resource, self.channel,
                                   p.if_match) for p in plans if p.existing is None]
        try:
            saved = iter(await asyncio.to_thread(rs.save_resources, self.store, writes))
        except rs.VersionConflict as exc:
            raise FhirError.one(412, "conflict", str(exc)) from exc
        results: list[EntryResult] = []
        to_journal: list[tuple[_Planned, EntryResult]] = []
        for plan in plans:
            if plan.existing is not None:
                results.append(EntryResult(200, plan.existing))
                continue
            save = next(saved)
            result = EntryResult(201 if save.created else 200, save.resource)
            results.append(result)
            if save.resource.message_id is None:
                to_journal.append((plan, result))
        if to_journal:
            outcomes = await asyncio.gather(*(
                self.committer.journal(self._record(plan, result, caller, interaction))
                for plan, result in to_journal))
            journaled = []
            for (_, result), outcome in zip(to_journal, outcomes, strict=True):
                assert result.resource is not None
                result.message_id = outcome.message_id
                journaled.append((result.resource, outcome.message_id))
                log.info("fhir.journaled", channel=self.channel, message_id=outcome.message_id,
                         resource=result.resource.key, version_id=result.resource.version_id,
                         duplicate=outcome.duplicate)
            await asyncio.to_thread(rs.set_message_ids, self.store, journaled)
        return results

    def _record(self, plan: _Planned, result: EntryResult, caller: Caller,
                interaction: str) -> InboundRecord:
        res = result.resource
        assert res is not None
        meta = {"resource_type": res.resource_type, "id": res.resource_id,
                "version_id": res.version_id, "interaction": interaction}
        if interaction in ("transaction", "batch"):
            meta["bundle_entry"] = plan.index
        return InboundRecord(
            channel=self.channel, raw=json.dumps(res.content, ensure_ascii=False).encode(),
            transport=TRANSPORT, peer=caller.peer, sender=caller.name,
            control_id=f"{res.key}/_history/{res.version_id}", message_type=res.resource_type,
            meta=meta, duplicate_window_seconds=self.duplicate_window_seconds)

    async def journal_error(self, raw: bytes, error: FhirError, caller: Caller,
                            meta: dict[str, Any] | None = None) -> int | None:
        """Keep a refused body (status ERROR) so an operator can see, fix and resend it."""
        record = InboundRecord(
            channel=self.channel, raw=raw, transport=TRANSPORT, peer=caller.peer,
            sender=caller.name, status=ERROR, reason=str(error)[:500],
            meta={"http_status": error.status, **(meta or {}),
                  "issues": [i.to_json() for i in error.issues]})
        try:
            outcome = await self.committer.journal(record)
        except Exception as exc:  # the refusal still goes out; the store trouble is logged
            log.error("fhir.journal_error_failed", channel=self.channel,
                      error=type(exc).__name__)
            return None
        log.info("fhir.refused", channel=self.channel, message_id=outcome.message_id,
                 status=error.status)
        return outcome.message_id


def _without_server_meta(resource: Any) -> Any:
    """The resource without meta.versionId/lastUpdated: the server assigns both, so what a
    client sent there is ignored rather than validated."""
    if not isinstance(resource, dict) or not isinstance(resource.get("meta"), dict):
        return resource
    meta = {k: v for k, v in resource["meta"].items() if k not in ("versionId", "lastUpdated")}
    out = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        out["meta"] = meta
    return out


def _raise_invalid(issues: list[Issue]) -> None:
    if issues:
        raise FhirError(400, issues)


def _version_from_etag(value: Any, where: str | None = None) -> int | None:
    """`W/"3"` (or `3`) -> 3; None when absent; 400 when unreadable."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise FhirError.one(400, "value", f"If-Match {value!r} is not an ETag like W/\"3\"",
                            where)
    return int(text)


def version_from_etag(value: str | None) -> int | None:
    """Public form of the If-Match parser for the HTTP layer."""
    return _version_from_etag(value)

