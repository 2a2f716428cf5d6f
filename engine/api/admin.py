"""/api/users, /api/audit and /api/system: user administration (admin), the audit log
(read-only: there is no route that changes it) and the store's size and retention."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from engine import audit
from engine.api.auth import Principal, client_ip, require
from engine.api.messages import TIME_PATTERN, parse_time
from engine.api.models import ERRORS, AuditOut, UserCreate, UserOut, UserUpdate
from engine.api.service import retention_view
from engine.auth import sessions, users
from engine.auth.roles import Permission


def router(state: Any) -> APIRouter:
    r = APIRouter(prefix="/api", tags=["admin"], responses=ERRORS)
    store = state.store

    @r.get("/users", response_model=list[UserOut])
    def list_users(_: Principal = Depends(require(Permission.USERS))) -> list[Any]:
        """Every local user (never a password hash)."""
        return users.list_users(store)

    @r.post("/users", response_model=UserOut, status_code=201)
    def add_user(body: UserCreate, request: Request,
                 principal: Principal = Depends(require(Permission.USERS))) -> Any:
        """Create a user with a role: viewer, operator or admin."""
        try:
            user = users.add_user(store, body.name, body.password, body.role)
        except users.UserError as exc:
            audit.record(store, principal.name, "user.add", f"user:{body.name}", "refused",
                         str(exc), client_ip(request))
            raise HTTPException(409, str(exc)) from exc
        audit.record(store, principal.name, "user.add", f"user:{user.name}", "ok",
                     f"role {user.role}", client_ip(request))
        return user

    @r.patch("/users/{name}", response_model=UserOut)
    def update_user(name: str, body: UserUpdate, request: Request,
                    principal: Principal = Depends(require(Permission.USERS))) -> Any:
        """Change a user's role, disable or enable it, or set a new password; the user's
        sessions end."""
        if users.get_user(store, name) is None:
            raise HTTPException(404, f"user {name!r} not found")
        try:
            user = users.update_user(store, name, role=body.role, disabled=body.disabled,
                                     password=body.password)
        except users.UserError as exc:
            audit.record(store, principal.name, "user.update", f"user:{name}", "refused",
                         str(exc), client_ip(request))
            raise HTTPException(409, str(exc)) from exc
        sessions.end_user_sessions(store, name)
        changed = [k for k in ("role", "disabled", "password") if getattr(body, k) is not None]
        audit.record(store, principal.name, "user.update", f"user:{name}", "ok",
                     "changed " + ", ".join(changed), client_ip(request))
        return user

    @r.get("/audit", response_model=list[AuditOut])
    def read_audit(actor: str | None = None, action: str | None = None,
                   target: str | None = None,
                   since: str | None = Query(None, pattern=TIME_PATTERN,
                                             description="Unix seconds or ISO 8601."),
                   cursor: int | None = Query(None, ge=1),
                   limit: int = Query(100, ge=1, le=1000),
                   _: Principal = Depends(require(Permission.USERS))) -> list[Any]:
        """The audit log, newest first; pass the last id as `cursor` for the next page."""
        return audit.read(store, actor=actor, action=action, target=target,
                          since=parse_time(since, "since"), before_id=cursor, limit=limit)

    @r.get("/system/retention")
    def retention(_: Principal = Depends(require(Permission.READ))) -> dict[str, Any]:
        """The store's size, each channel's retention setting and the pruning results."""
        return retention_view(state)

    @r.get("/system/nodes")
    def nodes(_: Principal = Depends(require(Permission.READ))) -> list[dict[str, Any]]:
        """Every engine process sharing this store: node, role, pid, host, last heartbeat
        and whether it is alive (beat within 15 s)."""
        from engine.cluster import cluster_view

        return cluster_view(state.store)

    return r
