"""The admin REST API under /api (OpenAPI at /openapi.json): session, channels,
messages, worklists and actions, users, audit, retention.

`routers(state)` returns every router; engine.http.routes adds them to the app.
"""

from __future__ import annotations

from typing import Any

__all__ = ["routers"]


def routers(state: Any) -> list[Any]:
    from engine.api import admin, channels, messages, session, worklists

    return [session.router(), channels.router(state), messages.router(state),
            worklists.router(state), admin.router(state)]
