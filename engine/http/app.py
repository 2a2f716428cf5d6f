"""Builds the FastAPI application for one engine node.

Routers are added by the features that own them (HL7 over HTTP, FHIR, admin API,
dashboard); this module owns only the app object and the health endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

import engine


@dataclass
class EngineState:
    """What request handlers may reach: config, store, committer, running sources."""

    config: Any
    store: Any
    committer: Any
    sources: dict[str, Any] = field(default_factory=dict)
    ingests: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    node: str = "node-1"
    # The supervised processing child (role all), or None when processing runs elsewhere.
    processor: Any = None


def build_app(state: EngineState, routers: list[Any] | None = None) -> FastAPI:
    # No /docs or /redoc: their pages load scripts from a CDN. /openapi.json stays open: it
    # describes the API and carries no data.
    app = FastAPI(title="ChargeBridge", version=engine.__version__, docs_url=None,
                  redoc_url=None)
    app.state.engine = state

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """Readiness: the store answers and every enabled source is listening."""
        try:
            state.store.ping()
            store_ok = True
        except Exception:
            store_ok = False
        processor_ok = state.processor is None or state.processor.alive
        nodes: list[dict[str, Any]] = []
        if store_ok:
            from engine.cluster import cluster_view

            try:
                nodes = cluster_view(state.store)
            except Exception:
                nodes = []
        ok = store_ok and state.ready and processor_ok
        return JSONResponse({"status": "ready" if ok else "not ready", "store": store_ok,
                             "processor": processor_ok, "sources": sorted(state.sources),
                             "node": state.node, "nodes": nodes},
                            status_code=200 if ok else 503)

    for router in routers or []:
        app.include_router(router)
    return app
