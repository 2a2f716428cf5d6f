"""/api/session: log in (JSON), who am I (with the CSRF token), log out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from engine import audit
from engine.api.auth import (
    LoginRefused,
    Principal,
    client_ip,
    login,
    require,
    set_session_cookie,
    store_of,
)
from engine.api.models import ERRORS, LoginRequest, SessionInfo
from engine.auth import sessions
from engine.auth.roles import ROLES, Permission


def _info(user: str, role: str, csrf: str | None) -> SessionInfo:
    return SessionInfo(user=user, role=role, csrf_token=csrf,
                       permissions=sorted(p.value for p in ROLES.get(role, frozenset())))


def router() -> APIRouter:
    r = APIRouter(prefix="/api/session", tags=["session"], responses=ERRORS)

    @r.post("", response_model=SessionInfo)
    def create(body: LoginRequest, request: Request, response: Response) -> SessionInfo:
        """Log in with a user name and password; sets the session cookie."""
        try:
            session_id, session = login(store_of(request), body.name, body.password,
                                        client_ip(request))
        except LoginRefused as exc:
            raise HTTPException(exc.status, str(exc)) from exc
        set_session_cookie(response, request, session_id)
        return _info(session.user, session.role, session.csrf_token)

    @r.get("", response_model=SessionInfo)
    def current(principal: Principal = Depends(require(Permission.READ))) -> SessionInfo:
        """The caller, its role and permissions, and (for a session) its CSRF token."""
        return _info(principal.name, principal.role, principal.csrf_token)

    @r.delete("", status_code=204)
    def logout(request: Request, response: Response,
               principal: Principal = Depends(require(Permission.READ))) -> Response:
        """End this session."""
        cookie = request.cookies.get(sessions.COOKIE)
        if cookie:
            sessions.end_session(store_of(request), cookie)
        audit.record(store_of(request), principal.name, "logout", ip=client_ip(request))
        response.delete_cookie(sessions.COOKIE, path="/")
        response.status_code = 204
        return response

    return r
