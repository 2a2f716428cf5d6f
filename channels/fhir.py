"""The `fhir` source: FHIR R4 REST (ChargeItem, Encounter, Patient, Coverage, Practitioner,
Organization, Account; transaction and batch Bundles) on the shared HTTP listener.

Each `fhir` channel serves its own base path (default `/fhir`); the interactions and
their answers are described in engine.fhir.router, the durability promise in
engine.fhir.service. start() opens the channel for requests; stop() makes it answer 503.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.connectors import Source
from engine.errors import ConfigError
from engine.fhir import SUPPORTED_TYPES
from engine.fhir.router import fhir_router
from engine.fhir.service import FhirService

__all__ = ["FhirSettings", "FhirSource", "fhir_routers"]

ResourceType = Literal["ChargeItem", "Encounter", "Patient", "Coverage", "Practitioner",
                       "Organization", "Account"]


class FhirSettings(BaseModel):
    """Settings of a `fhir` source; host and port are the shared HTTP listener's."""

    model_config = ConfigDict(extra="forbid")

    base_path: str = Field("/fhir", description="URL path the FHIR base is served at.")
    max_body_bytes: int = Field(10 << 20, ge=1024,
                                description="Largest request body; a bigger one gets 413.")
    auth_required: bool = Field(
        True, description="Require `Authorization: Bearer <api token>` on every request.")
    min_role: Literal["viewer", "operator", "admin"] = Field(
        "operator", description="Least token role allowed (resources carry PHI).")
    resource_types: list[ResourceType] = Field(
        default_factory=lambda: list(SUPPORTED_TYPES),  # type: ignore[arg-type]
        min_length=1, description="Resource types accepted; others are refused with 405.")

    @field_validator("base_path")
    @classmethod
    def _path(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith("/") or " " in value or "?" in value:
            raise ValueError("base_path must be a URL path starting with '/', e.g. /fhir")
        value = value.rstrip("/")
        if not value:
            raise ValueError("base_path cannot be '/' (the dashboard lives there)")
        return value

    @field_validator("resource_types")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class FhirSource(Source):
    """Receives FHIR resources at the channel's base path; the runtime sets `state`
    (engine.http.app.EngineState) before start(), and routes.py mounts `router()`."""

    settings_model = FhirSettings
    settings: FhirSettings
    state: Any = None
    accepting = False
    _service: FhirService | None = None

    async def start(self) -> None:
        self.accepting = True

    async def stop(self) -> None:
        self.accepting = False

    @property
    def service(self) -> FhirService:
        if self._service is None:
            if self.state is None:
                raise RuntimeError(f"fhir channel {self.name!r} has no engine state")
            window = 0.0
            with contextlib.suppress(KeyError, AttributeError):
                window = float(self.state.config.channel(self.name).duplicate_window_seconds)
            self._service = FhirService(self.name, self.state.store, self.state.committer,
                                        self.settings.resource_types, window)
        return self._service

    @property
    def base_path(self) -> str:
        return self.settings.base_path

    @property
    def max_body_bytes(self) -> int:
        return self.settings.max_body_bytes

    @property
    def auth_required(self) -> bool:
        return self.settings.auth_required

    @property
    def min_role(self) -> str:
        return self.settings.min_role

    def router(self) -> APIRouter:
        return fhir_router(self, self.state)


def fhir_routers(state: Any) -> list[APIRouter]:
    """One router per running `fhir` channel; two channels may not share a base path."""
    routers: list[APIRouter] = []
    seen: dict[str, str] = {}
    for name, source in sorted(state.sources.items()):
        if not isinstance(source, FhirSource):
            continue
        if source.base_path in seen:
            raise ConfigError([f"channels: {name}: source.base_path {source.base_path!r} is "
                               f"already served by channel {seen[source.base_path]!r}"])
        seen[source.base_path] = name
        routers.append(source.router())
    return routers
