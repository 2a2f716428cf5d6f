"""Who is calling: a session cookie (browsers) or a bearer API token (machines).

`require(permission)` is the FastAPI dependency every /api route uses. A request with a
session cookie that changes state must carry the session's CSRF token in the
`X-CSRF-Token` header (or a `csrf_token` form field); bearer-token requests need none,
since browsers never attach them on their own. Logins are throttled per user + address.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from engine import audit
from engine.auth import sessions, users
from engine.auth.roles import Permission, allows

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"

bearer_scheme = HTTPBearer(auto_error=False, description="API token (chargebridge token add)")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    role: str
    via: str  # "session" or "token"
    csrf_token: str | None = None

    def can(self, permission: Permission) -> bool:
        return allows(self.role, permission)


def store_of(request: Request) -> Any:
    return request.app.state.engine.store


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _token_principal(store: Any, raw: str) -> Principal | None:
    """Ask engine.auth.tokens (owned by the API-token feature) whether a token is valid."""
    try:
        tokens = importlib.import_module("engine.auth.tokens")
    except ImportError:
        return None
    verify = getattr(tokens, "verify_token", None) or getattr(tokens, "verify", None)
    if verify is None:
        return None
    found = verify(store, raw)
    if not found:
        return None
    if isinstance(found, dict):
        name, role = found.get("name"), found.get("role")
    elif isinstance(found, tuple):
        name, role = found[0], found[1]
    else:
        name, role = getattr(found, "name", None), getattr(found, "role", None)
    if not name or not role:
        return None
    return Principal(f"token:{name}", str(role), "token")


def session_principal(request: Request) -> Principal | None:
    cookie = request.cookies.get(sessions.COOKIE)
    if not cookie:
        return None
    session = sessions.lookup_session(store_of(request), cookie)
    if session is None:
        return None
    return Principal(session.user, session.role, "session", session.csrf_token)


def identify(request: Request, bearer: HTTPAuthorizationCredentials | None) -> Principal | None:
    """The caller, or None when the request carries no valid credentials."""
    if bearer is not None and bearer.scheme.lower() == "bearer":
        return _token_principal(store_of(request), bearer.credentials)
    return session_principal(request)


async def _csrf_presented(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get("csrf_token")
        return value if isinstance(value, str) else None
    return None


def require(permission: Permission) -> Callable[..., Any]:
    """Dependency: the caller must be authenticated and hold `permission`."""

    async def dependency(request: Request, bearer: HTTPAuthorizationCredentials | None =
                         Depends(bearer_scheme)) -> Principal:
        from starlette.concurrency import run_in_threadpool

        principal = await run_in_threadpool(identify, request, bearer)
        if principal is None:
            raise HTTPException(401, "authentication required: log in or send a bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        if principal.via == "session" and request.method not in SAFE_METHODS:
            presented = await _csrf_presented(request)
            if not sessions.csrf_matches(principal.csrf_token or "", presented):
                raise HTTPException(403, f"CSRF check failed: send the session's token in "
                                         f"the {CSRF_HEADER} header")
        if not principal.can(permission):
            raise HTTPException(403, f"role {principal.role!r} may not do this "
                                     f"(needs permission {permission.value!r})")
        return principal

    return dependency


class LoginRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def login(store: Any, name: str, password: str, ip: str) -> tuple[str, sessions.Session]:
    """Check a password (throttled) and open a session; LoginRefused says why not.

    Every attempt is audited, successful or not.
    """
    if sessions.locked_until(store, name, ip) is not None:
        audit.record(store, name, "login", outcome="locked", ip=ip)
        raise LoginRefused(429, "too many failed logins: try again later")
    user = users.authenticate(store, name, password)
    if user is None:
        locked = sessions.record_failure(store, name, ip)
        audit.record(store, name, "login", outcome="failed",
                     detail="lockout started" if locked else None, ip=ip)
        raise LoginRefused(401, "wrong user name or password")
    sessions.clear_failures(store, name, ip)
    session_id, session = sessions.create_session(store, user.name, ip)
    audit.record(store, user.name, "login", outcome="ok", ip=ip)
    return session_id, session


def set_session_cookie(response: Any, request: Request, session_id: str) -> None:
    """HttpOnly, SameSite=Strict, Secure when the request came over TLS."""
    response.set_cookie(sessions.COOKIE, session_id, max_age=int(sessions.MAX_AGE_SECONDS),
                        httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
