"""The `http_hl7` source: HL7 v2 over HTTP, `POST /hl7/{channel}` on the shared listener.

The body is one HL7 v2 message (Content-Type `application/hl7-v2`, `x-application/hl7-v2+er7`
or `text/plain`; the character set is MSH-18's, as on MLLP). It goes through the channel's
ingest exactly like an MLLP frame, and the response body is the ACK. The HTTP status says
the same as MSA-1, so a client that never reads the body still knows what happened:

    200  AA / CA  journaled (a resend of a journaled MSH-10 is AA again, stored once)
    400  AE / CE  the message could not be read or is invalid; kept with status ERROR
    422  AR / CR  readable, but this channel does not accept its type; kept with ERROR
    204          the sender's MSH-15/16 asked for no acknowledgement (NE, or ER/SU)

and, before anything is journaled (these are HTTP-level refusals, nothing is kept):

    401  no or wrong bearer token (`Authorization: Bearer <api token>`, engine.auth.tokens)
    403  the token's role is below the channel's `min_role`
    404  no running `http_hl7` channel of that name
    413  the body is larger than `max_body_bytes`
    415  the Content-Type is not one of the HL7 types above (e.g. JSON)
    503  the channel is stopping
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import structlog
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from engine.auth.tokens import role_allows, verify_token
from engine.connectors import Source
from engine.errors import HL7ReadError
from engine.hl7.reader import parse

__all__ = ["HL7_MEDIA_TYPES", "HttpHl7Settings", "HttpHl7Source", "hl7_router", "http_status"]

log = structlog.get_logger("chargebridge.http_hl7")

HL7_MEDIA_TYPES = frozenset({"application/hl7-v2", "x-application/hl7-v2+er7", "text/plain"})
_STATUS = {"AA": 200, "CA": 200, "AE": 400, "CE": 400, "AR": 422, "CR": 422}


class HttpHl7Settings(BaseModel):
    """Settings of an `http_hl7` source; host and port are the shared HTTP listener's."""

    model_config = ConfigDict(extra="forbid")

    require_token: bool = Field(
        True, description="Require `Authorization: Bearer <api token>` on every request.")
    min_role: Literal["viewer", "operator", "admin"] = Field(
        "operator", description="Least token role allowed to post (messages carry PHI).")
    max_body_bytes: int | None = Field(
        None, ge=1024, description="Largest message body; defaults to http.max_body_bytes.")


class HttpHl7Source(Source):
    """Receives HL7 v2 messages posted to /hl7/{channel}; the listener is the engine's HTTP
    server, so start() only opens the channel for requests and stop() closes it (503)."""

    settings_model = HttpHl7Settings
    settings: HttpHl7Settings
    accepting = False

    async def start(self) -> None:
        self.accepting = True

    async def stop(self) -> None:
        self.accepting = False


def http_status(reply: bytes | None, accepted: bool) -> int:
    """The HTTP status for an ingest answer: MSA-1 of the ACK, 204 when there is none."""
    if reply is None:
        return 204
    try:
        code = (parse(reply).get("MSA-1") or "").upper()
    except HL7ReadError:
        code = ""
    return _STATUS.get(code, 200 if accepted else 400)


async def _authorize(state: Any, request: Request, settings: HttpHl7Settings,
                     channel: str) -> Response | None:
    """None when the bearer token is valid and its role may post; else the 401/403."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    info = None
    if scheme.lower() == "bearer" and token.strip():
        info = await asyncio.to_thread(verify_token, state.store, token.strip())
    if info is None:
        log.warning("http.unauthorized", channel=channel)
        return _plain(401, "a valid API token is required (Authorization: Bearer <token>)",
                      {"WWW-Authenticate": 'Bearer realm="hl7"'})
    if not role_allows(info.role, settings.min_role):
        log.warning("http.forbidden", channel=channel, role=info.role)
        return _plain(403, f"token role {info.role!r} may not post HL7 (needs "
                           f"{settings.min_role} or above)")
    return None


def _plain(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain",
                    headers=headers)


def hl7_router(state: Any) -> APIRouter:
    """The `/hl7/{channel}` route for every `http_hl7` channel of this engine."""
    router = APIRouter(tags=["hl7"])

    @router.post("/hl7/{channel}", response_class=Response)
    async def post_hl7(channel: str, request: Request) -> Response:
        """Journal one HL7 v2 message and answer with its ACK (see the module docstring)."""
        source = state.sources.get(channel)
        if not isinstance(source, HttpHl7Source):
            # Authenticate first, so an anonymous caller cannot probe for channel names.
            refusal = await _authorize(state, request, HttpHl7Settings(), channel)
            return refusal or _plain(404, f"no http_hl7 channel named {channel!r}")
        if not source.accepting:
            return _plain(503, f"channel {channel!r} is not accepting messages",
                          {"Retry-After": "5"})
        if source.settings.require_token:
            refusal = await _authorize(state, request, source.settings, channel)
            if refusal is not None:
                return refusal
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in HL7_MEDIA_TYPES:
            return _plain(415, f"Content-Type must be one of {', '.join(sorted(HL7_MEDIA_TYPES))}"
                               f", got {media or 'none'!r}")
        limit = source.settings.max_body_bytes or state.config.http.max_body_bytes
        body = await _read_body(request, limit)
        if body is None:
            return _plain(413, f"message body is larger than {limit} bytes")
        peer = f"{request.client.host}:{request.client.port}" if request.client else "?"
        result = await source.ingest(body, channel=channel, peer=peer, transport="http")
        status = http_status(result.reply, result.accepted)
        if result.reply is None:
            return Response(status_code=status)
        return Response(result.reply, status_code=status,
                        media_type=f"{media}; charset=utf-8")

    return router


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
