"""Every router the HTTP listener serves, in one place (an explicit list, no discovery)."""

from __future__ import annotations

from typing import Any


def all_routers(state: Any) -> list[Any]:
    from channels.fhir import fhir_routers
    from channels.http_hl7 import hl7_router

    routers: list[Any] = []
    routers.append(hl7_router(state))  # POST /hl7/{channel}
    routers.extend(fhir_routers(state))  # [base]/... for every fhir channel
    from engine import metrics
    from engine.api import routers as api_routers
    from engine.dashboard import router as dashboard_router

    routers.extend(api_routers(state))  # /api/... admin REST API
    routers.append(metrics.router(state))  # GET /metrics (authenticated)
    routers.append(dashboard_router(state))  # /, /login, /messages, /worklists, ...
    return routers
