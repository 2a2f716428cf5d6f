"""Request and response bodies of the admin API (they shape its OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

# Row ids are 64-bit integers in both backends.
MAX_ID = 2**63 - 1
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """An error answer: what was wrong, in words."""

    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text} for code, text in (
        (401, "Not authenticated"), (403, "Not allowed for this role, or CSRF check failed"),
        (404, "Not found"), (409, "Conflict"), (429, "Too many failed logins"))}


class LoginRequest(_Body):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class SessionInfo(BaseModel):
    user: str
    role: str
    csrf_token: str | None = Field(None, description="Send as X-CSRF-Token on POST/PATCH.")
    permissions: list[str]


class ItemOutcome(BaseModel):
    id: str
    outcome: str
    ok: bool


class ActionResponse(BaseModel):
    """What an action did, item by item."""

    action: str
    results: list[ItemOutcome]
    succeeded: int
    failed: int


class MessageFilter(_Body):
    channel: str | None = None
    status: str | None = None
    control_id: str | None = None
    message_type: str | None = None
    since: float | None = Field(None, description="Unix seconds, inclusive.")
    until: float | None = Field(None, description="Unix seconds, exclusive.")


class ReprocessRequest(_Body):
    message_ids: list[RowId] = Field(default_factory=list, max_length=10000)
    filter: MessageFilter | None = Field(
        None, description="Reprocess every message this selects (at most 10000).")


class EditRequest(_Body):
    raw: str = Field(min_length=1, max_length=10 << 20,
                     description="The corrected message; segments separated by CR or LF.")


class EditResponse(BaseModel):
    original_id: int
    new_message_id: int | None
    outcome: str


class ReleaseRequest(_Body):
    charge_ids: list[str] = Field(min_length=1, max_length=10000)


class ResendRequest(_Body):
    delivery_ids: list[RowId] = Field(min_length=1, max_length=10000)


class RetryRequest(_Body):
    destination: str | None = Field(None, description="Only this destination's dead letters.")


class MessageSummary(BaseModel):
    id: int
    channel: str
    status: str
    received_at: float
    control_id: str | None
    message_type: str | None
    transport: str
    reason: str | None
    edited_from: int | None = None


class MessagePage(BaseModel):
    items: list[MessageSummary]
    next_cursor: int | None = Field(None, description="Pass as `cursor` for the next page.")


class UserCreate(_Body):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    role: str


class UserUpdate(_Body):
    role: str | None = None
    disabled: bool | None = None
    password: str | None = Field(None, min_length=1, max_length=1024)


class UserOut(BaseModel):
    name: str
    role: str
    disabled: bool
    created_at: float


class AuditOut(BaseModel):
    id: int
    at: float
    actor: str
    action: str
    target: str | None
    outcome: str
    detail: str | None
    ip: str


class ChannelOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    state: str
    received: int
    held: int
    queued: int
    per_minute: list[int]


def outcomes(action: str, results: dict[Any, str], ok_values: set[str]) -> ActionResponse:
    items = [ItemOutcome(id=str(k), outcome=v, ok=v in ok_values) for k, v in results.items()]
    good = sum(1 for i in items if i.ok)
    return ActionResponse(action=action, results=items, succeeded=good,
                          failed=len(items) - good)
