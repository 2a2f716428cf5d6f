"""Shared fixtures for the outbound tests: a real pm-sim on an ephemeral port, a real
SQLite store in tmp_path, and helpers to queue charges and drive the DeliveryRunner."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.charge import Charge
from engine.connectors import Destination
from engine.pipeline.delivery import DeliveryRunner, StoreContext
from engine.pmsim import PmSim
from engine.store.records import QUEUED, ChargeRecord, InboundRecord, MessageOutcome
from engine.store.sqlite import SqliteStore

MEDICARE = {"payer_id": "00430", "payer_name": "Medicare Part B of Illinois",
            "member_id": "1EG4TE5MK73"}
BCBS = {"payer_id": "00621", "payer_name": "Blue Cross Blue Shield of Illinois",
        "member_id": "XOF884512207"}


def make_charge(n: int, *, encounter: str | None = None, payer: dict[str, str] | None = None,
                transaction_type: str = "charge", amount: str = "165.00",
                mrn: str | None = None) -> Charge:
    """A realistic office-visit charge; `n` makes the charge id (and, unless given, the
    patient and encounter) unique."""
    return Charge.model_validate({
        "charge_id": f"ch_{n:024d}",
        "transaction_type": transaction_type,
        "patient": {"mrn": mrn or f"MRN{4400 + n}", "last_name": "Okafor", "first_name": "Adaeze",
                    "birth_date": "1984-07-19", "sex": "F"},
        "encounter": {"id": encounter or f"V{100000 + n}", "patient_class": "O"},
        "coverage": [payer or BCBS],
        "service_date": "2024-03-04",
        "procedure": {"code": "99214", "system": "CPT"},
        "units": "1", "amount": amount,
        "diagnoses": [{"code": "E11.9"}], "diagnosis_pointers": [1],
        "rendering_provider": {"npi": "1987654328"},
        "source": {"channel": "ehr_dft"},
    })


def queue(store: SqliteStore, charges: list[Charge],
          destinations: list[Destination] | list[str]) -> None:
    """Store charges as one processed message with their deliveries, routed like the
    processor does: each destination that accepts the charge gets a delivery."""
    [journaled] = store.journal([InboundRecord(channel="ehr_dft", raw=b"MSH|test",
                                               transport="test")])
    records = []
    for charge in charges:
        names = [d if isinstance(d, str) else d.name for d in destinations
                 if isinstance(d, str) or d.accepts(charge)]
        records.append(ChargeRecord(charge, QUEUED, destinations=names))
    store.complete_message(MessageOutcome(journaled.message_id, "PROCESSED", charges=records))


def drive(runner: DeliveryRunner, until: Callable[[], Any], timeout: float = 30.0,
          what: str = "deliveries") -> Any:
    """Run delivery passes until `until()` is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runner.run_once()
        value = until()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def deliveries(store: SqliteStore, destination: str | None = None) -> list[dict[str, Any]]:
    rows = store._query("SELECT id, charge_id, destination, kind, status, attempts, detail, "
                        "response, result FROM deliveries ORDER BY id")
    keys = ("id", "charge_id", "destination", "kind", "status", "attempts", "detail",
            "response", "result")
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    return [d for d in out if destination is None or d["destination"] == destination]


def all_done(store: SqliteStore) -> bool:
    return store.count_by_status("deliveries").get(QUEUED, 0) == 0


def stats(sim: PmSim) -> dict[str, Any]:
    """The server's counters, read over HTTP like any client would."""
    return httpx.get(f"{sim.url}/_stats", timeout=10).json()  # type: ignore[no-any-return]


def control(sim: PmSim, **command: Any) -> None:
    httpx.post(f"{sim.url}/_control", json=command, timeout=10).raise_for_status()


@pytest.fixture
def sim() -> Iterator[PmSim]:
    with PmSim(port=0) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    db = SqliteStore(tmp_path / "store.db", fsync=False)
    db.migrate()
    yield db
    db.close()


@pytest.fixture
def context(store: SqliteStore, tmp_path: Path) -> StoreContext:
    return StoreContext(store, tmp_path / "out")
