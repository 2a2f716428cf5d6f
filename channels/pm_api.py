"""The `pm_api` destination: each charge is one HTTP call to a practice-management API.

Contract (see engine.connectors.Destination):
- Every call carries `Idempotency-Key: <charge_id>` (`<charge_id>:<kind>` for a void or
  replacement), so a call repeated after a crash or a lost response never bills twice.
- 2xx -> SENT (the response body kept, the PM's `id` kept as `pm_id` for corrections);
  connection errors, timeouts, 429 and 5xx -> RETRY with exponential backoff and jitter
  (a Retry-After header wins); any other status -> FAILED with the body kept. After
  `max_attempts` calls a retryable failure becomes FAILED (dead-letter).
- A batch is delivered by `concurrency` workers sharing one connection pool. Deliveries of
  one encounter go in delivery-id order on one worker, and a credit or correction waits
  while an earlier charge of its encounter is still queued: it never overtakes its charge.
- A circuit breaker pauses the destination (due() is False) after `breaker_failures`
  consecutive retryable failures; after the cool-down one delivery goes through as a
  probe, and its success resumes normal batches.
"""

from __future__ import annotations

import json
import os
import string
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx
import jinja2
import structlog
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator

from channels.filters import RoutingFilter
from engine.charge import Charge
from engine.connectors import DeliveryOutcome, Destination, DestinationContext, QueuedDelivery
from engine.errors import ChargeBridgeError
from engine.pipeline.delivery import backoff_seconds

__all__ = ["CallSettings", "CircuitBreaker", "PmApiDestination", "PmApiError", "PmApiSettings"]

log = structlog.get_logger("chargebridge.pm_api")

# Names a call's path template may use, e.g. "/charges/{charge_id}/void".
PATH_FIELDS = frozenset({"charge_id", "encounter_id", "pm_id", "kind"})


class PmApiError(ChargeBridgeError):
    """A pm_api destination is configured in a way it cannot run with."""


class CallSettings(BaseModel):
    """One kind of call to the PM API: method and path (relative to `base_url`)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["POST", "PUT", "PATCH", "DELETE"] = Field(
        "POST", description="HTTP method.")
    path: str = Field("/charges", description="Path template; may use {charge_id}, "
                      "{encounter_id}, {kind} and {pm_id} (the PM's id from the original "
                      "delivery's response).")
    send_body: bool = Field(True, description="Send the charge (or template) as the body.")

    @field_validator("path")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name}
        except ValueError as exc:
            raise ValueError(f"path template {value!r}: {exc}") from exc
        unknown = names - PATH_FIELDS
        if unknown:
            raise ValueError(f"path template {value!r} uses unknown field(s) "
                             f"{', '.join(sorted(unknown))}; known: "
                             f"{', '.join(sorted(PATH_FIELDS))}")
        return value


def _sandbox() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                keep_trailing_newline=True)


class PmApiSettings(BaseModel):
    """Settings of a `pm_api` destination."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="Base URL of the PM API, e.g. http://127.0.0.1:8099.")
    charge_call: CallSettings = Field(
        default_factory=CallSettings, description="The call that posts a new charge.")
    credit_call: CallSettings = Field(
        default_factory=CallSettings, description="The call that posts a credit "
        "(transaction_type credit).")
    void_call: CallSettings = Field(
        default_factory=lambda: CallSettings(method="POST", path="/charges/{charge_id}/void"),
        description="The call that voids a charge already sent (a `void` correction).")
    replacement_call: CallSettings = Field(
        default_factory=lambda: CallSettings(method="PUT", path="/charges/{charge_id}"),
        description="The call that replaces a charge already sent (a `replacement`).")
    body_template: str | None = Field(
        None, description="Jinja2 template of the request body (sandboxed; variables "
        "`charge` — the charge JSON as a dict — `kind`, `previous`). Default: the "
        "normalized charge JSON.")
    content_type: str = Field("application/json", description="Content-Type of the body.")
    headers: dict[str, str] = Field(default_factory=dict,
                                    description="Extra headers sent with every call.")
    token_env: str | None = Field(
        None, description="Environment variable holding a bearer token (Authorization).")
    api_key_env: str | None = Field(
        None, description="Environment variable holding an API key.")
    api_key_header: str = Field("X-API-Key", description="Header that carries the API key.")
    connect_timeout_seconds: float = Field(5.0, gt=0, description="TCP/TLS connect timeout.")
    timeout_seconds: float = Field(30.0, gt=0, description="Read/write timeout of one call.")
    verify_tls: bool = Field(True, description="Verify the server's TLS certificate.")
    max_attempts: int = Field(10, ge=1, description="Calls before a retryable failure goes "
                              "FAILED (dead-letter).")
    retry_base_seconds: float = Field(1.0, gt=0, description="First retry delay; doubles per "
                                      "attempt, with full jitter.")
    retry_max_seconds: float = Field(300.0, gt=0, description="Longest retry delay.")
    retry_after_max_seconds: float = Field(
        3600.0, gt=0, description="Longest Retry-After the destination honours.")
    concurrency: int = Field(4, ge=1, le=256, description="Calls in flight at most.")
    batch_size: int = Field(100, ge=1, description="Deliveries taken from the queue at once.")
    breaker_failures: int = Field(5, ge=1, description="Consecutive retryable failures that "
                                  "open the circuit breaker.")
    breaker_cooldown_seconds: float = Field(30.0, gt=0, description="Pause before a probe.")
    response_max_chars: int = Field(4000, ge=0, description="Response body kept per delivery.")
    filter: RoutingFilter = Field(default_factory=RoutingFilter,
                                  description="Which charges this destination takes.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("body_template")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                _sandbox().from_string(value)
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(f"body_template line {exc.lineno}: {exc.message}") from exc
        return value


class CircuitBreaker:
    """closed -> (N consecutive failures) -> open -> (cool-down) -> half_open -> one probe:
    success closes, failure opens again. Thread-safe."""

    def __init__(self, threshold: int, cooldown_seconds: float) -> None:
        self.threshold = threshold
        self.cooldown_seconds = cooldown_seconds
        self.state: Literal["closed", "open", "half_open"] = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether calls may go out now; moves open -> half_open once cooled down."""
        with self._lock:
            if self.state == "open" and time.monotonic() - self.opened_at >= self.cooldown_seconds:
                self.state = "half_open"
            return self.state != "open"

    def is_open(self) -> bool:
        with self._lock:
            return self.state == "open"

    def remaining_seconds(self) -> float:
        with self._lock:
            return max(0.0, self.cooldown_seconds - (time.monotonic() - self.opened_at))

    def success(self) -> bool:
        """Record a call the server answered; True when this closed the breaker."""
        with self._lock:
            was_open = self.state != "closed"
            self.state, self.failures = "closed", 0
            return was_open

    def failure(self) -> bool:
        """Record a retryable failure; True when this opened the breaker."""
        with self._lock:
            self.failures += 1
            if self.state == "half_open" or (self.state == "closed"
                                             and self.failures >= self.threshold):
                self.state, self.opened_at = "open", time.monotonic()
                return True
            return False


@dataclass
class _Call:
    """The outcome of one attempt, before max_attempts is applied."""

    outcome: DeliveryOutcome
    called: bool  # False when nothing went out (waiting for order, breaker open)


class PmApiDestination(Destination):
    """Delivers each charge as one idempotent call to a PM REST API."""

    settings_model: ClassVar[type[BaseModel]] = PmApiSettings
    settings: PmApiSettings

    def __init__(self, name: str, settings: PmApiSettings, context: DestinationContext) -> None:
        super().__init__(name, settings, context)
        self._batch_size = settings.batch_size
        self._accepts = settings.filter.compile()
        self._template = (_sandbox().from_string(settings.body_template)
                          if settings.body_template is not None else None)
        self._headers = {**settings.headers, **self._auth_headers(settings)}
        self._breaker = CircuitBreaker(settings.breaker_failures,
                                       settings.breaker_cooldown_seconds)
        limits = httpx.Limits(max_connections=settings.concurrency,
                              max_keepalive_connections=settings.concurrency)
        self._client = httpx.Client(
            base_url=settings.base_url, limits=limits, verify=settings.verify_tls,
            timeout=httpx.Timeout(settings.timeout_seconds,
                                  connect=settings.connect_timeout_seconds))
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency,
                                        thread_name_prefix=f"pm_api-{name}")

    def _auth_headers(self, settings: PmApiSettings) -> dict[str, str]:
        headers: dict[str, str] = {}
        for setting, variable in (("token_env", settings.token_env),
                                  ("api_key_env", settings.api_key_env)):
            if variable is None:
                continue
            value = os.environ.get(variable)
            if not value:
                raise PmApiError(f"destination {self.name!r}: {setting}: environment "
                                 f"variable {variable} is not set")
            if setting == "token_env":
                headers["Authorization"] = f"Bearer {value}"
            else:
                headers[settings.api_key_header] = value
        return headers

    # -- Destination contract ----------------------------------------------------------
    @property  # type: ignore[override]
    def batch_size(self) -> int:
        """One delivery at a time while the breaker probes; the configured size otherwise."""
        return 1 if self._breaker.state == "half_open" else self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch_size = value

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    def due(self, pending: int, oldest_age_seconds: float, flush: bool) -> bool:
        """Deliver whenever something waits, unless the circuit breaker is open."""
        return pending > 0 and self._breaker.allow()

    def accepts(self, charge: Charge) -> bool:
        return self._accepts(charge)

    def deliver_batch(self, deliveries: list[QueuedDelivery],
                      batch_id: int) -> list[DeliveryOutcome]:
        """One outcome per delivery; encounters in parallel, each encounter in order."""
        waiting = self._credits_behind_queued_charges(deliveries)
        groups: dict[tuple[str, str] | int, list[QueuedDelivery]] = {}
        for delivery in sorted(deliveries, key=lambda d: d.delivery_id):
            groups.setdefault(_encounter_key(delivery.charge) or delivery.delivery_id,
                              []).append(delivery)
        futures = [self._pool.submit(self._deliver_group, group, waiting)
                   for group in groups.values()]
        outcomes = [outcome for future in futures for outcome in future.result()]
        return sorted(outcomes, key=lambda o: o.delivery_id)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    # -- ordering ------------------------------------------------------------------------
    def _credits_behind_queued_charges(self, deliveries: list[QueuedDelivery]) -> set[int]:
        """Credits/corrections in this batch whose encounter has an earlier charge still
        QUEUED for this destination outside the batch (e.g. in retry backoff)."""
        follows = [d for d in deliveries if _follows_charge(d)]
        store = getattr(self.context, "store", None)
        if not follows or store is None:
            return set()
        in_batch = {d.delivery_id for d in deliveries}
        earlier = _queued_charges_before(store, self.name,
                                         max(d.delivery_id for d in follows))
        waiting: set[int] = set()
        for delivery in follows:
            key = _encounter_key(delivery.charge)
            if key is not None and any(
                    delivery_id < delivery.delivery_id and delivery_id not in in_batch
                    and encounter == key for delivery_id, encounter in earlier):
                waiting.add(delivery.delivery_id)
        return waiting

    def _deliver_group(self, group: list[QueuedDelivery],
                       waiting: set[int]) -> list[DeliveryOutcome]:
        outcomes: list[DeliveryOutcome] = []
        charge_pending = False  # an earlier charge of this encounter was not delivered
        for delivery in group:
            if _follows_charge(delivery) and (charge_pending or delivery.delivery_id in waiting):
                outcomes.append(DeliveryOutcome(
                    delivery.delivery_id, "RETRY", "waiting for an earlier charge of the "
                    "encounter", retry_after_seconds=self.settings.retry_base_seconds))
                continue
            outcome = self._attempt(delivery)
            if not _follows_charge(delivery) and outcome.status == "RETRY":
                charge_pending = True
            outcomes.append(outcome)
        return outcomes

    # -- one call ------------------------------------------------------------------------
    def _attempt(self, delivery: QueuedDelivery) -> DeliveryOutcome:
        try:
            call = self._call(delivery)
        except Exception as exc:  # a bug in one call must not sink the whole batch
            log.error("pm_api.call_crashed", destination=self.name,
                      delivery_id=delivery.delivery_id, error=type(exc).__name__)
            call = _Call(DeliveryOutcome(delivery.delivery_id, "RETRY",
                                         f"pm_api internal error: {type(exc).__name__}"), True)
        outcome = call.outcome
        if (outcome.status == "RETRY" and call.called
                and delivery.attempts + 1 >= self.settings.max_attempts):
            outcome.status = "FAILED"
            outcome.detail = (f"gave up after {delivery.attempts + 1} attempts "
                              f"(max_attempts): {outcome.detail}")
            outcome.retry_after_seconds = None
        return outcome

    def _call(self, delivery: QueuedDelivery) -> _Call:
        if self._breaker.is_open():
            return _Call(DeliveryOutcome(
                delivery.delivery_id, "RETRY", "circuit breaker open",
                retry_after_seconds=self._breaker.remaining_seconds()
                + self.settings.retry_base_seconds), False)
        call_settings = self._call_settings(delivery)
        try:
            path = _render_path(call_settings.path, delivery)
            content = self._body(delivery) if call_settings.send_body else None
        except (jinja2.TemplateError, KeyError, ValueError, TypeError) as exc:
            return _Call(DeliveryOutcome(delivery.delivery_id, "FAILED",
                                         f"request could not be built: {exc}"), False)
        key = (delivery.charge_id if delivery.kind == "original"
               else f"{delivery.charge_id}:{delivery.kind}")
        headers = {**self._headers, "Idempotency-Key": key}
        if content is not None:
            headers["Content-Type"] = self.settings.content_type
        where = f"{call_settings.method} {path}"
        try:
            response = self._client.request(call_settings.method, path, content=content,
                                            headers=headers)
        except httpx.TransportError as exc:
            return _Call(self._retryable(delivery, f"{where}: {type(exc).__name__}: {exc}",
                                         None, None), True)
        body = response.text[: self.settings.response_max_chars]
        status = response.status_code
        if 200 <= status < 300:
            if self._breaker.success():
                log.info("pm_api.circuit_closed", destination=self.name)
            return _Call(DeliveryOutcome(delivery.delivery_id, "SENT", f"HTTP {status}",
                                         response=body, result=_result(response, path)), True)
        if status == 429 or status >= 500:
            retry_after = _retry_after_seconds(response.headers.get("Retry-After"),
                                               self.settings.retry_after_max_seconds)
            return _Call(self._retryable(delivery, f"{where}: HTTP {status}", body,
                                         retry_after), True)
        self._breaker.success()  # the server answered: it is up, this charge is the problem
        log.warning("pm_api.rejected", destination=self.name,
                    delivery_id=delivery.delivery_id, status_code=status)
        return _Call(DeliveryOutcome(delivery.delivery_id, "FAILED",
                                     f"{where}: HTTP {status} (not retryable)",
                                     response=body), True)

    def _retryable(self, delivery: QueuedDelivery, detail: str, body: str | None,
                   retry_after: float | None) -> DeliveryOutcome:
        if self._breaker.failure():
            log.warning("pm_api.circuit_opened", destination=self.name,
                        cooldown_seconds=self.settings.breaker_cooldown_seconds)
        log.info("pm_api.retry", destination=self.name, delivery_id=delivery.delivery_id,
                 attempts=delivery.attempts + 1, detail=detail)
        if retry_after is None:
            retry_after = backoff_seconds(delivery.attempts, self.settings.retry_base_seconds,
                                          self.settings.retry_max_seconds)
        return DeliveryOutcome(delivery.delivery_id, "RETRY", detail,
                               retry_after_seconds=retry_after, response=body)

    def _call_settings(self, delivery: QueuedDelivery) -> CallSettings:
        if delivery.kind == "void":
            return self.settings.void_call
        if delivery.kind == "replacement":
            return self.settings.replacement_call
        if delivery.charge.transaction_type == "credit":
            return self.settings.credit_call
        return self.settings.charge_call

    def _body(self, delivery: QueuedDelivery) -> bytes:
        data = delivery.charge.to_json_dict()
        if self._template is None:
            return json.dumps(data, separators=(",", ":")).encode()
        return self._template.render(charge=data, kind=delivery.kind,
                                     previous=delivery.previous).encode()


def _follows_charge(delivery: QueuedDelivery) -> bool:
    """Credits and corrections must come after the charges of their encounter."""
    return delivery.kind != "original" or delivery.charge.transaction_type == "credit"


def _encounter_key(charge: Charge) -> tuple[str, str] | None:
    if not charge.encounter.id:
        return None
    return (charge.patient.mrn or "", charge.encounter.id)


def _queued_charges_before(store: Any, destination: str,
                           before_id: int) -> list[tuple[int, tuple[str, str] | None]]:
    """(delivery id, encounter) of the original charges still QUEUED for `destination`
    with a delivery id below `before_id`."""
    return list(store.queued_charges_before(destination, before_id))


def _render_path(template: str, delivery: QueuedDelivery) -> str:
    pm_id = delivery.previous.get("pm_id")
    values = {"charge_id": delivery.charge_id, "kind": delivery.kind,
              "encounter_id": delivery.charge.encounter.id or "",
              "pm_id": "" if pm_id is None else str(pm_id)}
    if "{pm_id}" in template and not values["pm_id"]:
        raise ValueError(f"path {template!r} needs pm_id but the original delivery kept none")
    return template.format_map({k: quote(v, safe="") for k, v in values.items()})


def _result(response: httpx.Response, path: str) -> dict[str, Any]:
    result: dict[str, Any] = {"status_code": response.status_code, "path": path}
    try:
        body = response.json()
    except ValueError:
        return result
    if isinstance(body, dict) and isinstance(body.get("id"), str | int):
        result["pm_id"] = body["id"]
    return result


def _retry_after_seconds(value: str | None, cap: float) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), cap)
