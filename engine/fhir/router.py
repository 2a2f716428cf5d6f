"""The HTTP face of one FHIR channel: a FastAPI router mounted at the channel's base path.

    GET  [base]/metadata                     CapabilityStatement
    POST [base]                              transaction or batch Bundle
    POST [base]/{type}                       create (If-None-Exist for conditional create)
    PUT  [base]/{type}/{id}                  update or create with a client id (If-Match)
    GET  [base]/{type}/{id}[/_history/{v}]   read / vread

Bodies are application/fhir+json or application/json. `Prefer: return=minimal |
representation | OperationOutcome` picks the answer's body; Location, ETag and
Last-Modified are set on success. Refusals are OperationOutcomes whose issues carry the
element's FHIRPath in `expression`: 400 invalid or malformed, 401/403 token, 404 unknown
type or id, 405 type not accepted or interaction not supported, 412 If-Match/If-None-Exist,
413 too large, 415 not JSON. A refused body from an authenticated sender is journaled with
status ERROR; an unauthenticated request is answered and not kept.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import structlog
from fastapi import APIRouter, Request, Response

from engine.auth.tokens import role_allows, verify_token
from engine.fhir.capability import capability_statement
from engine.fhir.errors import FhirError
from engine.fhir.outcome import information, operation_outcome
from engine.fhir.service import Caller, EntryResult, FhirService, version_from_etag
from engine.fhir.validation import parse_json
from engine.store.fhir_resources import StoredResource

__all__ = ["FHIR_JSON", "FhirEndpoint", "error_response", "fhir_router"]

log = structlog.get_logger("chargebridge.fhir")

FHIR_JSON = "application/fhir+json"
_MEDIA_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir", ""})
_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            412: "Precondition Failed", 413: "Payload Too Large", 415: "Unsupported Media Type",
            422: "Unprocessable Entity", 500: "Internal Server Error"}


class FhirEndpoint(Protocol):
    """What the router needs from a FHIR source (channels.fhir.FhirSource)."""

    name: str
    accepting: bool

    @property
    def service(self) -> FhirService: ...

    @property
    def base_path(self) -> str: ...

    @property
    def max_body_bytes(self) -> int: ...

    @property
    def auth_required(self) -> bool: ...

    @property
    def min_role(self) -> str: ...


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status_code=status,
                    media_type=f"{FHIR_JSON}; charset=utf-8", headers=headers)


def error_response(error: FhirError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="fhir"'} if error.status == 401 else None
    return _json(operation_outcome(error.issues), error.status, headers)


def _prefer(request: Request) -> str:
    for part in request.headers.get("prefer", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "return":
            value = value.strip().strip('"')
            if value in ("minimal", "representation", "OperationOutcome"):
                return value
    return "representation"


def _etag(resource: StoredResource) -> str:
    return f'W/"{resource.version_id}"'


def _location(endpoint: FhirEndpoint, request: Request, resource: StoredResource) -> str:
    base = str(request.base_url).rstrip("/") + endpoint.base_path
    return f"{base}/{resource.key}/_history/{resource.version_id}"


def _status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, '')}".strip()


def fhir_router(endpoint: FhirEndpoint, state: Any) -> APIRouter:
    """The router for one FHIR channel (see the module docstring)."""
    router = APIRouter(prefix=endpoint.base_path, tags=["fhir"])

    async def authenticate(request: Request) -> Caller:
        peer = f"{request.client.host}:{request.client.port}" if request.client else ""
        if not endpoint.accepting:
            raise FhirError.one(503, "transient", f"channel {endpoint.name!r} is not "
                                "accepting requests")
        if not endpoint.auth_required:
            return Caller("anonymous", peer)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        info = None
        if scheme.lower() == "bearer" and token.strip():
            info = await asyncio.to_thread(verify_token, state.store, token.strip())
        if info is None:
            log.warning("http.unauthorized", channel=endpoint.name)
            raise FhirError.one(401, "login", "a valid API token is required "
                                "(Authorization: Bearer <token>)")
        if not role_allows(info.role, endpoint.min_role):
            raise FhirError.one(403, "forbidden", f"token role {info.role!r} may not use this "
                                f"endpoint (needs {endpoint.min_role} or above)")
        return Caller(info.name, peer)

    async def read_body(request: Request, caller: Caller) -> Any:
        """The request's JSON; refusals of an authenticated sender's body are journaled."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        limit = endpoint.max_body_bytes
        declared = request.headers.get("content-length", "")
        body: bytes | None = None
        if not (declared.isdigit() and int(declared) > limit):
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    break
                chunks.append(chunk)
            else:
                body = b"".join(chunks)
        if body is None:
            error = FhirError.one(413, "too-costly", f"the body is larger than {limit} bytes")
            # The oversize body itself is not kept: only that one was refused.
            await endpoint.service.journal_error(b"", error, caller,
                                                 {"content_length": declared or None})
            raise error
        if media not in _MEDIA_TYPES:
            error = FhirError.one(415, "not-supported", f"Content-Type must be {FHIR_JSON} "
                                  f"or application/json, got {media!r}")
            await endpoint.service.journal_error(body, error, caller)
            raise error
        try:
            return body, parse_json(body)
        except ValueError as exc:
            error = FhirError.one(400, "structure", str(exc))
            await endpoint.service.journal_error(body, error, caller)
            raise error from exc

    async def run(request: Request, action: Any, interaction: str) -> Response:
        """Authenticate, read, act; every refusal becomes an OperationOutcome."""
        caller: Caller | None = None
        raw: bytes | None = None
        try:
            caller = await authenticate(request)
            if request.method in ("POST", "PUT"):
                raw, data = await read_body(request, caller)
            else:
                data = None
            return await action(caller, data)  # type: ignore[no-any-return]
        except FhirError as exc:
            if raw is not None and caller is not None:
                await endpoint.service.journal_error(raw, exc, caller,
                                                     {"interaction": interaction})
            return error_response(exc)
        except Exception as exc:  # never a bare 500: the client gets an OperationOutcome
            log.error("fhir.request_failed", channel=endpoint.name, interaction=interaction,
                      error=type(exc).__name__)
            error = FhirError.one(500, "exception", f"internal error ({type(exc).__name__}); "
                                  "nothing was acknowledged, send again")
            if raw is not None and caller is not None:
                await endpoint.service.journal_error(raw, error, caller,
                                                     {"interaction": interaction})
            return error_response(error)

    def answer(request: Request, result: EntryResult, created: bool) -> Response:
        resource = result.resource
        assert resource is not None
        headers = {"ETag": _etag(resource),
                   "Last-Modified": str(resource.content.get("meta", {}).get("lastUpdated"))}
        if created:
            headers["Location"] = _location(endpoint, request, resource)
        prefer = _prefer(request)
        if prefer == "minimal":
            return Response(status_code=result.status, headers=headers)
        if prefer == "OperationOutcome":
            return _json(information(f"{resource.key} version {resource.version_id} "
                                     + ("stored" if result.message_id else "already stored")),
                         result.status, headers)
        return _json(resource.content, result.status, headers)

    @router.get("/metadata")
    async def metadata(request: Request) -> Response:
        """The CapabilityStatement: what this endpoint accepts, truthfully."""
        async def act(caller: Caller, _: Any) -> Response:
            base = str(request.base_url).rstrip("/") + endpoint.base_path
            return _json(capability_statement(base, endpoint.service.accepted_types,
                                              endpoint.auth_required), 200)
        return await run(request, act, "capabilities")

    @router.post("")
    @router.post("/")
    async def post_bundle(request: Request) -> Response:
        """A transaction (all or nothing) or batch (per entry) Bundle."""
        async def act(caller: Caller, data: Any) -> Response:
            kind, results = await endpoint.service.bundle(data, caller)
            return _json(_response_bundle(endpoint, request, kind, results), 200)
        return await run(request, act, "bundle")

    @router.post("/{resource_type}")
    async def create(resource_type: str, request: Request) -> Response:
        """Create; with If-None-Exist a conditional create."""
        async def act(caller: Caller, data: Any) -> Response:
            result = await endpoint.service.create(
                resource_type, data, caller, request.headers.get("if-none-exist"))
            return answer(request, result, created=True)
        return await run(request, act, "create")

    @router.put("/{resource_type}/{resource_id}")
    async def update(resource_type: str, resource_id: str, request: Request) -> Response:
        """Update (or create under the client's id); If-Match makes it version-aware."""
        async def act(caller: Caller, data: Any) -> Response:
            result = await endpoint.service.update(
                resource_type, resource_id, data, caller,
                version_from_etag(request.headers.get("if-match")))
            return answer(request, result, created=result.status == 201)
        return await run(request, act, "update")

    @router.get("/{resource_type}/{resource_id}")
    async def read(resource_type: str, resource_id: str, request: Request) -> Response:
        """Read the current version."""
        async def act(caller: Caller, _: Any) -> Response:
            found = await endpoint.service.read(resource_type, resource_id)
            return _json(found.content, 200, {"ETag": _etag(found)})
        return await run(request, act, "read")

    @router.get("/{resource_type}/{resource_id}/_history/{version_id}")
    async def vread(resource_type: str, resource_id: str, version_id: str,
                    request: Request) -> Response:
        """Read one version."""
        async def act(caller: Caller, _: Any) -> Response:
            if not version_id.isdigit():
                raise FhirError.one(404, "not-found", f"version {version_id!r} is not known")
            found = await endpoint.service.read(resource_type, resource_id, int(version_id))
            return _json(found.content, 200, {"ETag": _etag(found)})
        return await run(request, act, "vread")

    @router.get("/{resource_type}")
    async def search(resource_type: str, request: Request) -> Response:
        """Search is not offered: this endpoint is an inbound feed."""
        async def act(caller: Caller, _: Any) -> Response:
            raise FhirError.one(405, "not-supported", "search is not supported by this "
                                "endpoint (read by id is)")
        return await run(request, act, "search")

    @router.api_route("/{resource_type}/{resource_id}", methods=["DELETE", "PATCH"])
    async def refuse(resource_type: str, resource_id: str, request: Request) -> Response:
        """Delete and patch are not offered: corrections arrive as updates."""
        async def act(caller: Caller, _: Any) -> Response:
            raise FhirError.one(405, "not-supported", f"{request.method} is not supported; "
                                "send an update (e.g. status entered-in-error)")
        return await run(request, act, request.method.lower())

    return router


def _response_bundle(endpoint: FhirEndpoint, request: Request, kind: str,
                     results: list[EntryResult]) -> dict[str, Any]:
    prefer = _prefer(request)
    entries: list[dict[str, Any]] = []
    for result in results:
        entry: dict[str, Any] = {}
        response: dict[str, Any] = {"status": _status_line(result.status)}
        resource = result.resource
        if resource is not None:
            entry["fullUrl"] = (str(request.base_url).rstrip("/") + endpoint.base_path
                                + "/" + resource.key)
            response.update(location=f"{resource.key}/_history/{resource.version_id}",
                            etag=_etag(resource),
                            lastModified=resource.content.get("meta", {}).get("lastUpdated"))
            if prefer == "representation":
                entry["resource"] = resource.content
            elif prefer == "OperationOutcome":
                response["outcome"] = information(f"{resource.key} version "
                                                  f"{resource.version_id} stored")
        if result.issues:
            response["outcome"] = operation_outcome(result.issues)
        entry["response"] = response
        entries.append(entry)
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": entries}

