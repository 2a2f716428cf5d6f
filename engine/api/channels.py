"""/api/channels: list, one channel's state and counts, start / stop / pause."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request

from engine import audit
from engine.api.auth import Principal, client_ip, require
from engine.api.control import ChannelControl
from engine.api.models import ERRORS, ActionResponse, ChannelOut, outcomes
from engine.api.service import channel_overview
from engine.auth.roles import Permission


def router(state: Any) -> APIRouter:
    r = APIRouter(prefix="/api/channels", tags=["channels"], responses=ERRORS)
    control = ChannelControl.of(state)

    @r.get("", response_model=list[ChannelOut])
    def list_channels(_: Principal = Depends(require(Permission.READ))) -> list[dict[str, Any]]:
        """Every channel: state, message and charge counts, messages per minute over the
        last hour (oldest minute first), last message time, oldest queued age."""
        return channel_overview(state, control)

    @r.get("/{name}", response_model=ChannelOut)
    def one(name: str, _: Principal = Depends(require(Permission.READ))) -> dict[str, Any]:
        """One channel's state and counts."""
        for channel in channel_overview(state, control):
            if channel["name"] == name:
                return channel
        raise HTTPException(404, f"channel {name!r} not found")

    @r.post("/{name}/{action}", response_model=ActionResponse)
    async def change(name: str, action: Literal["start", "stop", "pause"], request: Request,
                     principal: Principal = Depends(require(Permission.CHANNELS))
                     ) -> ActionResponse:
        """Start, stop or pause a channel's source on this node."""
        try:
            outcome = await getattr(control, action)(name, principal.name)
        except KeyError as exc:
            raise HTTPException(404, f"channel {name!r} not found") from exc
        except OSError as exc:  # e.g. the listen port is taken
            raise HTTPException(409, f"channel {name!r} could not {action}: {exc}") from exc
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(audit.record, state.store, principal.name, f"channel.{action}",
                                f"channel:{name}", "ok", outcome, client_ip(request))
        return outcomes(f"channel.{action}", {name: outcome}, {outcome})

    return r
