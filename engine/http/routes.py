"""Every router the HTTP listener serves, in one place (an explicit list, no discovery)."""

from __future__ import annotations

from typing import Any


def all_routers(state: Any) -> list[Any]:
    routers: list[Any] = []
    return routers
