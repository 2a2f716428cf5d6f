"""Test helpers (public, like structlog.testing): run an engine node in a background
thread with real listeners, and put charges into a store the way processing would."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from engine.charge import Charge, Finding
from engine.store.records import FAILED, PROCESSED, ChargeRecord, DeliveryUpdate, MessageOutcome


def write_config(folder: Path, channels: list[dict[str, Any]] | None = None,
                 destinations: list[dict[str, Any]] | None = None,
                 log_level: str = "info") -> Path:
    """A config.yaml in `folder`: SQLite store, HTTP and one MLLP channel on port 0."""
    doc = {
        "store": {"url": "sqlite:///var/chargebridge.db", "fsync": False},
        "http": {"host": "127.0.0.1", "port": 0},
        "logging": {"level": log_level, "format": "json"},
        "channels": channels if channels is not None else [{
            "name": "clinic", "source": {"type": "mllp", "host": "127.0.0.1", "port": 0},
            "accept": ["DFT^P03", "ADT^A04", "ADT^A08"], "destinations": [],
            "retention_days": 30}],
        "destinations": destinations or [],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")
    return path


@contextmanager
def running_node(config_path: Path, timeout: float = 30.0) -> Iterator[Any]:
    """An IngestNode (sources + HTTP) serving on its own event loop in a thread."""
    from engine.config import load_config
    from engine.runtime import IngestNode

    config = load_config(config_path)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            node = IngestNode(config)
            holder["node"] = node
            loop.run_until_complete(node.start())
        except BaseException as exc:
            holder["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(node.stop())
        loop.close()

    thread = threading.Thread(target=run, name="engine-node", daemon=True)
    thread.start()
    if not started.wait(timeout):
        raise TimeoutError("engine node did not start")
    if "error" in holder:
        raise holder["error"]
    try:
        yield holder["node"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)


def sample_charge(charge_id: str, channel: str, amount: str = "145.00") -> Charge:
    """A charge carrying the office-visit sample's (invented) patient details."""
    return Charge.model_validate({
        "charge_id": charge_id,
        "patient": {"mrn": "MRN100234", "last_name": "Rivera", "first_name": "Elena",
                    "birth_date": "1978-04-12",
                    "address": {"line1": "418 Juniper Hollow Rd", "city": "Springfield",
                                "state": "IL", "postal_code": "62704"}},
        "encounter": {"id": "V20240315001"},
        "coverage": [{"payer_id": "00621", "member_id": "XOH884512037",
                      "subscriber": {"last_name": "Rivera", "first_name": "Elena",
                                     "birth_date": "1978-04-12"}}],
        "service_date": "2024-03-15", "procedure": {"code": "99213", "system": "CPT"},
        "units": "1", "amount": str(Decimal(amount)),
        "diagnoses": [{"code": "E11.9"}], "source": {"channel": channel},
    })


def put_charges(store: Any, message_id: int, records: list[ChargeRecord],
                mrn: str | None = "MRN100234") -> None:
    """Store a message's outcome as the processor would (one transaction)."""
    store.complete_message(MessageOutcome(message_id, PROCESSED, charges=records, mrn=mrn))


def held(charge: Charge, rule: str = "missing_modifier") -> ChargeRecord:
    return ChargeRecord(charge, "HELD", [Finding(rule=rule, severity="hold",
                                                 message="needs a person")])


def fail_delivery(store: Any, charge_id: str, detail: str = "HTTP 500 from PM") -> int:
    """Mark the charge's queued delivery FAILED (retries exhausted); returns its id."""
    rows = store._query("SELECT id FROM deliveries WHERE charge_id = ? ORDER BY id", (charge_id,))
    delivery_id = int(rows[0][0])
    store.finish_deliveries([DeliveryUpdate(delivery_id, FAILED, detail=detail)])
    return delivery_id


PASSWORD = "correct horse battery staple"
_SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "hl7" / "dft_p03_office_visit.hl7"


def sample_message(control_id: str, path: Path = _SAMPLE) -> bytes:
    """The office-visit DFT sample with its MSH-10 replaced (each one a new message)."""
    raw = path.read_bytes()
    return raw.replace(b"NC20240315-0001", control_id.encode(), 1)


def send(node: Any, messages: list[bytes], channel: str = "clinic") -> list[bytes]:
    """Send over MLLP to a running node's channel; returns the ACKs."""
    return send_to(node.sources[channel].port, messages)


def send_to(port: int, messages: list[bytes]) -> list[bytes]:
    """Send over MLLP to 127.0.0.1:`port` on a thread of its own; returns the ACKs."""
    from engine.hl7.mllp import send_messages

    replies: list[bytes] = []
    failure: list[BaseException] = []

    def run() -> None:  # its own thread: the caller may be inside an event loop (Playwright)
        try:
            replies.extend(asyncio.run(send_messages("127.0.0.1", port, messages)))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="mllp-send")
    thread.start()
    thread.join(60)
    if failure:
        raise failure[0]
    return replies


def cheap_password_hashing() -> None:
    """Small argon2 costs so tests that log in many times stay fast (still argon2id)."""
    from engine.auth.users import configure_hashing

    configure_hashing(time_cost=1, memory_cost_kib=1024, parallelism=1)


def add_users(store: Any) -> None:
    """admin, operator and viewer, all with PASSWORD."""
    from engine.auth.users import add_user

    for role in ("admin", "operator", "viewer"):
        add_user(store, role, PASSWORD, role)


def login_client(base_url: str, name: str, password: str = PASSWORD) -> Any:
    """An httpx.Client logged in through /api/session, sending its CSRF token."""
    import httpx

    client = httpx.Client(base_url=base_url, timeout=30.0)
    reply = client.post("/api/session", json={"name": name, "password": password})
    reply.raise_for_status()
    client.headers["X-CSRF-Token"] = reply.json()["csrf_token"]
    return client
