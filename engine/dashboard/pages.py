"""Dashboard pages. Each page asks the same service functions the API uses, so what a
page shows and what the API answers never drift apart. Every page needs a session (the
login page aside); PHI is masked for roles without the PHI permission and every
unmasked message view is audited (engine.api.messages.detail does both).

Headers: a strict Content-Security-Policy (scripts and styles from this origin only, no
inline script), no framing, no referrer, no MIME sniffing, no caching of pages.
"""

from __future__ import annotations

import functools
import secrets
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from engine import audit
from engine.api.auth import (
    LoginRefused,
    Principal,
    client_ip,
    login,
    session_principal,
    set_session_cookie,
)
from engine.api.control import ChannelControl
from engine.api.messages import detail, parse_time, search
from engine.api.service import (
    MESSAGE_STATES,
    channel_overview,
    dead_letters,
    held_charges,
    retention_view,
)
from engine.auth import sessions, users
from engine.auth.roles import Permission

LOGIN_CSRF_COOKIE = "cb_login_csrf"
_STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; "
                               "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_env = Environment(loader=PackageLoader("engine.dashboard", "templates"),
                   autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


class _LoginRedirect(Exception):
    pass


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _context(principal: Principal) -> dict[str, Any]:
    return {"user": principal.name, "role": principal.role, "csrf_token": principal.csrf_token,
            "masked": not principal.can(Permission.PHI),
            "can_act": principal.can(Permission.ACT),
            "can_channels": principal.can(Permission.CHANNELS),
            "can_users": principal.can(Permission.USERS)}


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


def _safe_next(value: str) -> str:
    return value if value.startswith("/") and not value.startswith("//") else "/"


def router(state: Any) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    store = state.store
    control = ChannelControl.of(state)

    def who(request: Request, permission: Permission = Permission.READ) -> Principal:
        principal = session_principal(request)
        if principal is None:
            raise _LoginRedirect()
        if not principal.can(permission):
            raise HTTPException(403, f"role {principal.role!r} may not open this page")
        return principal

    def guarded(handler: Any) -> Any:
        @functools.wraps(handler)
        def wrapper(request: Request, *args: Any, **kwargs: Any) -> Response:
            try:
                return handler(request, *args, **kwargs)  # type: ignore[no-any-return]
            except _LoginRedirect:
                return _to_login(request)

        return wrapper

    @r.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404, "not found")
        body = (resources.files("engine.dashboard") / "static" / name).read_bytes()
        return Response(body, media_type=_STATIC[name],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    @r.get("/login")
    def login_page(request: Request, next: str = "/") -> Response:
        if session_principal(request) is not None:
            return RedirectResponse(_safe_next(next), status_code=303)
        token = secrets.token_urlsafe(24)
        response = _page("login.html", login_csrf=token, next=_safe_next(next), user=None)
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                            path="/login", secure=request.url.scheme == "https", max_age=3600)
        return response

    @r.post("/login")
    def login_submit(request: Request, name: str = Form(""), password: str = Form(""),
                     csrf_token: str = Form(""), next: str = Form("/")) -> Response:
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not expected or not sessions.csrf_matches(expected, csrf_token):
            return _page("login.html", 403, error="The login form expired; please try again.",
                         login_csrf=expected, next=_safe_next(next), user=None)
        try:
            session_id, _ = login(store, name, password, client_ip(request))
        except LoginRefused as exc:
            return _page("login.html", exc.status, error=str(exc), login_csrf=expected,
                         next=_safe_next(next), user=None)
        response = RedirectResponse(_safe_next(next), status_code=303)
        set_session_cookie(response, request, session_id)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    @r.post("/logout")
    def logout(request: Request, csrf_token: str = Form("")) -> Response:
        principal = session_principal(request)
        cookie = request.cookies.get(sessions.COOKIE, "")
        if principal is not None and sessions.csrf_matches(principal.csrf_token or "",
                                                           csrf_token):
            sessions.end_session(store, cookie)
            audit.record(store, principal.name, "logout", ip=client_ip(request))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(sessions.COOKIE, path="/")
        return response

    @r.get("/")
    @guarded
    def channels_page(request: Request) -> Response:
        principal = who(request)
        return _page("channels.html", channels=channel_overview(state, control),
                     **_context(principal))

    @r.get("/messages")
    @guarded
    def messages_page(request: Request) -> Response:
        principal = who(request)
        q = request.query_params
        f = {k: q.get(k) or None for k in ("channel", "status", "control_id", "message_type",
                                            "since", "until", "mrn", "cursor")}
        error = None
        page: dict[str, Any] = {"items": [], "next_cursor": None}
        try:
            cursor = int(f["cursor"]) if f["cursor"] else None
            page = search(store, principal, client_ip(request), channel=f["channel"],
                          status=f["status"], control_id=f["control_id"],
                          message_type=f["message_type"], mrn=f["mrn"],
                          since=parse_time(f["since"], "since"),
                          until=parse_time(f["until"], "until"), cursor=cursor, limit=50)
        except HTTPException as exc:
            error = exc.detail
        except ValueError:
            error = "cursor must be a number"
        params = {k: v for k, v in f.items() if v and k != "cursor"}
        next_url = "/messages?" + urlencode({**params, "cursor": page["next_cursor"] or ""})
        return _page("messages.html", page=page, f=f, error=error, next_url=next_url,
                     statuses=MESSAGE_STATES,
                     channel_names=[c.name for c in state.config.channels],
                     **_context(principal))

    @r.get("/messages/{message_id}")
    @guarded
    def message_page(request: Request, message_id: int) -> Response:
        principal = who(request)
        found = detail(store, principal, message_id, client_ip(request))
        return _page("message.html", m=found, **_context(principal))

    @r.get("/worklists/held")
    @guarded
    def held_page(request: Request, sort: str = "age", order: str = "desc") -> Response:
        principal = who(request)
        if sort not in ("amount", "age") or order not in ("asc", "desc"):
            sort, order = "age", "desc"
        data = held_charges(store, sort=sort, order=order, limit=500,
                            masked=not principal.can(Permission.PHI))
        return _page("held.html", data=data, sort=sort, order=order, **_context(principal))

    @r.get("/worklists/dead-letter")
    @guarded
    def dead_page(request: Request, sort: str = "age", order: str = "desc") -> Response:
        principal = who(request)
        if sort not in ("amount", "age") or order not in ("asc", "desc"):
            sort, order = "age", "desc"
        data = dead_letters(store, sort=sort, order=order, limit=500,
                            masked=not principal.can(Permission.PHI))
        return _page("dead.html", data=data, sort=sort, order=order, **_context(principal))

    @r.get("/system")
    @guarded
    def system_page(request: Request) -> Response:
        principal = who(request)
        from engine.cluster import cluster_view

        return _page("system.html", view=retention_view(state), nodes=cluster_view(store),
                     **_context(principal))

    @r.get("/audit")
    @guarded
    def audit_page(request: Request, cursor: int | None = None) -> Response:
        principal = who(request, Permission.USERS)
        entries = audit.read(store, before_id=cursor, limit=200)
        next_cursor = entries[-1].id if len(entries) == 200 else None
        return _page("audit.html", entries=entries, next_cursor=next_cursor,
                     **_context(principal))

    @r.get("/users")
    @guarded
    def users_page(request: Request) -> Response:
        principal = who(request, Permission.USERS)
        return _page("users.html", users=users.list_users(store), **_context(principal))

    return r
