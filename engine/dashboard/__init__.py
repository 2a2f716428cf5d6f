"""The operators' dashboard: server-rendered Jinja2 pages and a little vendored JS/CSS.

`router(state)` serves the pages; engine.http.routes adds it to the app.
"""

from __future__ import annotations

from typing import Any

__all__ = ["router"]


def router(state: Any) -> Any:
    from engine.dashboard.pages import router as pages_router

    return pages_router(state)
