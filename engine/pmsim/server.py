"""The reference PM API server: stdlib ThreadingHTTPServer, one thread per connection.

Business endpoints (each needs an `Idempotency-Key` header; a key seen before gets the
first response again and counts as a duplicate — the charge is never stored twice):

- `POST /charges` — store a normalized charge (JSON with `charge_id`); 201 with a PM id.
- `POST /charges/{charge_id}/void`, `DELETE /charges/{charge_id}` — void a stored charge.
- `PUT /charges/{charge_id}` — replace a stored charge.
- `GET /charges/{charge_id}` — read one back.

Test endpoints: `GET /_stats`, `POST /_reset`, and `POST /_control` with any of
`{"script": [503, {"status": 429, "retry_after": 1}, 201], "down": true,
"latency_ms": 50, "failure_rate": 0.2}`. A scripted 2xx step means "process normally";
`{"status": 201, "drop": true}` processes the request and then drops the connection
(the response is lost, as when a network fails after the PM committed). While `down`,
every business request is dropped unanswered.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["PmSim", "ScriptStep", "SimSettings", "SimState"]

_CHARGE_PATH = re.compile(r"^/charges/(?P<charge_id>[^/]+)(?P<void>/void)?$")


@dataclass
class SimSettings:
    """How the simulated PM behaves; all of it can be changed at run time via /_control."""

    latency_ms: float = 0.0
    failure_rate: float = 0.0
    # When set, requests need `Authorization: Bearer <token>` or `X-API-Key: <token>`.
    token: str | None = None
    seed: int | None = None


@dataclass
class ScriptStep:
    """One scripted answer: a non-2xx status is returned as is (nothing stored); a 2xx
    status processes the request normally and answers with that status."""

    status: int
    retry_after: float | None = None
    body: Any = None
    drop: bool = False

    @classmethod
    def parse(cls, raw: Any) -> ScriptStep:
        if isinstance(raw, int):
            return cls(raw)
        if isinstance(raw, dict) and isinstance(raw.get("status"), int):
            return cls(int(raw["status"]), raw.get("retry_after"), raw.get("body"),
                       bool(raw.get("drop", False)))
        raise ValueError(f"script step must be a status or {{'status': ...}}, got {raw!r}")


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


DROP = Reply(0, None, drop=True)


class SimState:
    """Everything the server remembers. All mutation happens under `lock`."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.random = random.Random(settings.seed)
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.script: deque[ScriptStep] = deque()
            self.down = False
            self.responses: dict[str, Reply] = {}
            self.charges: dict[str, dict[str, Any]] = {}
            self.charge_order: list[str] = []
            self.pm_ids: dict[str, str] = {}
            self.encounters_charged: set[tuple[str, str]] = set()
            self.requests_by_key: Counter[str] = Counter()
            self.received = 0
            self.duplicates = 0
            self.duplicate_charges = 0
            self.order_violations = 0
            self.voids = 0
            self.replacements = 0
            self.in_flight = 0
            self.max_concurrent = 0

    def control(self, command: dict[str, Any]) -> None:
        steps = [ScriptStep.parse(s) for s in command.get("script", [])]
        with self.lock:
            if "script" in command:
                self.script = deque(steps)
            if "down" in command:
                self.down = bool(command["down"])
            if "latency_ms" in command:
                self.settings.latency_ms = float(command["latency_ms"])
            if "failure_rate" in command:
                self.settings.failure_rate = float(command["failure_rate"])

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "received": self.received, "charges": len(self.charges),
                "duplicates": self.duplicates, "duplicate_charges": self.duplicate_charges,
                "order_violations": self.order_violations, "voids": self.voids,
                "replacements": self.replacements, "max_concurrent": self.max_concurrent,
                "keys": list(self.responses), "charge_ids": list(self.charge_order),
                "requests_by_key": dict(self.requests_by_key), "down": self.down,
                "script_left": len(self.script),
            }

    # -- request handling ------------------------------------------------------------
    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def handle(self, method: str, path: str, key: str | None, body: bytes) -> Reply:
        """Answer one business request (after the simulated latency)."""
        with self.lock:
            self.received += 1
            if self.down:
                return DROP
            if not key:
                return Reply(400, {"error": "Idempotency-Key header is required"})
            self.requests_by_key[key] += 1
            cached = self.responses.get(key)
            if cached is not None:
                self.duplicates += 1
                return Reply(cached.status, cached.body,
                             {**cached.headers, "Idempotent-Replayed": "true"})
            step = self.script.popleft() if self.script else None
            if step is None and self.random.random() < self.settings.failure_rate:
                step = ScriptStep(503)
            if step is not None and not 200 <= step.status < 300:
                headers = ({"Retry-After": _seconds(step.retry_after)}
                           if step.retry_after is not None else {})
                return Reply(step.status, step.body if step.body is not None
                             else {"error": f"simulated {step.status}"}, headers)
            reply = self._apply(method, path, body)
            if step is not None and 200 <= reply.status < 300:
                reply.status = step.status
            if reply.status < 500 and reply.status != 429:
                self.responses[key] = reply  # final answers are replayed for the same key
            if step is not None and step.drop:
                return DROP
            return reply

    def _apply(self, method: str, path: str, body: bytes) -> Reply:
        if path == "/charges" and method == "POST":
            return self._create(body)
        match = _CHARGE_PATH.match(path)
        if match is None:
            return Reply(404, {"error": f"no route for {method} {path}"})
        charge_id = match["charge_id"]
        if method == "GET" and not match["void"]:
            record = self.charges.get(charge_id)
            return Reply(200, record) if record else Reply(404, {"error": "unknown charge"})
        if charge_id not in self.charges:
            return Reply(404, {"error": f"unknown charge {charge_id}"})
        if (method == "POST" and match["void"]) or (method == "DELETE" and not match["void"]):
            self.charges[charge_id]["voided"] = True
            self.voids += 1
            return Reply(200, {"id": self.pm_ids[charge_id], "charge_id": charge_id,
                               "status": "voided"})
        if method == "PUT" and not match["void"]:
            parsed = _json_object(body)
            if parsed is None:
                return Reply(400, {"error": "body must be a JSON object"})
            self.charges[charge_id] = {**parsed, "replaced": True}
            self.replacements += 1
            return Reply(200, {"id": self.pm_ids[charge_id], "charge_id": charge_id,
                               "status": "replaced"})
        return Reply(405, {"error": f"{method} not allowed on {path}"})

    def _create(self, body: bytes) -> Reply:
        charge = _json_object(body)
        if charge is None or not isinstance(charge.get("charge_id"), str):
            return Reply(400, {"error": "body must be a JSON object with a string charge_id"})
        kind = charge.get("transaction_type", "charge")
        if kind not in ("charge", "credit"):
            return Reply(422, {"error": f"unknown transaction_type {kind!r}"})
        charge_id = charge["charge_id"]
        if charge_id in self.charges:  # same charge under another key: a double billing
            self.duplicate_charges += 1
            return Reply(409, {"error": f"charge {charge_id} already exists",
                               "id": self.pm_ids[charge_id]})
        encounter = _encounter_key(charge)
        if kind == "credit" and encounter is not None and encounter not in self.encounters_charged:
            self.order_violations += 1
        if kind == "charge" and encounter is not None:
            self.encounters_charged.add(encounter)
        pm_id = f"pm-{len(self.charges) + 1:06d}"
        self.charges[charge_id] = charge
        self.charge_order.append(charge_id)
        self.pm_ids[charge_id] = pm_id
        return Reply(201, {"id": pm_id, "charge_id": charge_id, "status": "created"})

    def authorized(self, headers: Any) -> bool:
        token = self.settings.token
        if token is None:
            return True
        return bool(headers.get("Authorization") == f"Bearer {token}"
                    or headers.get("X-API-Key") == token)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body or b"null")
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _encounter_key(charge: dict[str, Any]) -> tuple[str, str] | None:
    encounter = charge.get("encounter") or {}
    patient = charge.get("patient") or {}
    if not isinstance(encounter, dict) or not encounter.get("id"):
        return None
    mrn = patient.get("mrn") if isinstance(patient, dict) else None
    return (str(mrn or ""), str(encounter["id"]))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real PM API behind a load balancer
    server_version = "ChargeBridgePmSim/1"
    timeout = 120  # an idle keep-alive connection gives its thread back eventually
    state: SimState  # set on the subclass PmSim builds

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests and the demo read /_stats, not an access log."""

    def do_GET(self) -> None:
        if self.path == "/_stats":
            self._send(Reply(200, self.state.stats()))
        elif self.path == "/healthz":
            self._send(Reply(200, {"status": "ok"}))
        else:
            self._business()

    def do_POST(self) -> None:
        if self.path == "/_control":
            command = _json_object(self._body())
            if command is None:
                self._send(Reply(400, {"error": "control body must be a JSON object"}))
                return
            try:
                self.state.control(command)
            except (TypeError, ValueError) as exc:
                self._send(Reply(400, {"error": str(exc)}))
                return
            self._send(Reply(200, self.state.stats()))
        elif self.path == "/_reset":
            self._body()
            self.state.reset()
            self._send(Reply(200, self.state.stats()))
        else:
            self._business()

    def do_PUT(self) -> None:
        self._business()

    def do_DELETE(self) -> None:
        self._business()

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _business(self) -> None:
        body = self._body()
        self.state.enter()
        try:
            latency = self.state.settings.latency_ms
            if latency > 0:
                time.sleep(latency / 1000.0)
            if not self.state.authorized(self.headers):
                reply = Reply(401, {"error": "missing or wrong bearer token / API key"})
            else:
                reply = self.state.handle(self.command, self.path,
                                          self.headers.get("Idempotency-Key"), body)
        finally:
            self.state.leave()
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        if reply.drop:
            self.close_connection = True
            return
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for idle keep-alive connections
    request_queue_size = 256


class PmSim:
    """The server, startable in-process: `with PmSim(port=0) as sim: sim.url ...`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 settings: SimSettings | None = None) -> None:
        self.state = SimState(settings or SimSettings())
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{self.port}"

    def start(self) -> PmSim:
        """Serve on a background thread; returns once the socket accepts connections."""
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, name="pm-sim",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until interrupted (the CLI)."""
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._server.server_close()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> PmSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
