"""/api/worklists and the charge / delivery actions: held charges and dead-letter
deliveries (sortable by amount and age), release, resend, retry the dead-letter queue."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from engine import audit
from engine.api.auth import Principal, client_ip, require
from engine.api.models import (
    ERRORS,
    ActionResponse,
    IdPath,
    ReleaseRequest,
    ResendRequest,
    RetryRequest,
    outcomes,
)
from engine.api.service import dead_letters, failed_delivery_ids, held_charges, resend_delivery
from engine.auth.roles import Permission
from engine.pipeline.actions import release_charges

_RESENT = "queued for resend"
Sort = Literal["amount", "age"]
Order = Literal["asc", "desc"]


def release(state: Any, principal: Principal, ids: list[str], ip: str) -> ActionResponse:
    results = release_charges(state.store, state.config, ids, who=principal.name)
    for charge_id, outcome in results.items():
        audit.record(state.store, principal.name, "charge.release", f"charge:{charge_id}",
                     "ok" if outcome == "released" else outcome, ip=ip)
    return outcomes("charge.release", results, {"released"})


def resend(state: Any, principal: Principal, ids: list[int], ip: str,
           action: str = "delivery.resend") -> ActionResponse:
    results: dict[int, str] = {}
    for delivery_id in ids:
        outcome = resend_delivery(state.store, delivery_id, principal.name)
        results[delivery_id] = outcome
        audit.record(state.store, principal.name, action, f"delivery:{delivery_id}",
                     "ok" if outcome == _RESENT else outcome, ip=ip)
    return outcomes(action, results, {_RESENT})


def router(state: Any) -> APIRouter:
    r = APIRouter(prefix="/api", tags=["worklists"], responses=ERRORS)

    @r.get("/worklists/held")
    def held(sort: Sort = "age", order: Order = "desc", limit: int = Query(100, ge=1, le=1000),
             offset: int = Query(0, ge=0, le=1_000_000),
             principal: Principal = Depends(require(Permission.READ))) -> dict[str, Any]:
        """HELD charges with their findings; age desc = oldest first."""
        return held_charges(state.store, sort=sort, order=order, limit=limit, offset=offset,
                            masked=not principal.can(Permission.PHI))

    @r.get("/worklists/dead-letter")
    def dead(sort: Sort = "age", order: Order = "desc", destination: str | None = None,
             limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=1_000_000),
             principal: Principal = Depends(require(Permission.READ))) -> dict[str, Any]:
        """FAILED deliveries whose retries are exhausted."""
        return dead_letters(state.store, sort=sort, order=order, limit=limit, offset=offset,
                            destination=destination, masked=not principal.can(Permission.PHI))

    @r.post("/charges/release", response_model=ActionResponse)
    def release_many(body: ReleaseRequest, request: Request,
                     principal: Principal = Depends(require(Permission.ACT))) -> ActionResponse:
        """Release HELD charges to the destinations of their channel."""
        return release(state, principal, list(dict.fromkeys(body.charge_ids)),
                       client_ip(request))

    @r.post("/charges/{charge_id}/release", response_model=ActionResponse)
    def release_one(charge_id: str, request: Request,
                    principal: Principal = Depends(require(Permission.ACT))) -> ActionResponse:
        """Release one HELD charge."""
        return release(state, principal, [charge_id], client_ip(request))

    @r.post("/deliveries/resend", response_model=ActionResponse)
    def resend_many(body: ResendRequest, request: Request,
                    principal: Principal = Depends(require(Permission.ACT))) -> ActionResponse:
        """Queue FAILED or SENT deliveries again, each for its one destination."""
        return resend(state, principal, list(dict.fromkeys(body.delivery_ids)),
                      client_ip(request))

    @r.post("/deliveries/{delivery_id}/resend", response_model=ActionResponse)
    def resend_one(delivery_id: IdPath, request: Request,
                   principal: Principal = Depends(require(Permission.ACT))) -> ActionResponse:
        """Queue one FAILED or SENT delivery again."""
        return resend(state, principal, [delivery_id], client_ip(request))

    @r.post("/deliveries/retry-dead-letters", response_model=ActionResponse)
    def retry(body: RetryRequest, request: Request,
              principal: Principal = Depends(require(Permission.ACT))) -> ActionResponse:
        """Queue every dead-letter delivery (optionally of one destination) again."""
        ids = failed_delivery_ids(state.store, body.destination)
        return resend(state, principal, ids, client_ip(request), "delivery.retry_dead_letter")

    return r
