"""The reference PM API server itself: idempotency, auth, corrections, control, CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from engine.pmsim import PmSim, SimSettings
from tests.outbound.conftest import control, make_charge, stats

ROOT = Path(__file__).resolve().parents[2]


def _post(sim: PmSim, key: str | None, body: object, path: str = "/charges") -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return httpx.post(f"{sim.url}{path}", json=body, headers=headers, timeout=10)


class TestIdempotency:
    def test_repeated_key_replays_the_first_answer(self, sim: PmSim) -> None:
        """A second call with the same key gets the first response and is counted as a
        duplicate; the charge is stored once."""
        charge = make_charge(1).to_json_dict()
        first = _post(sim, "k1", charge)
        again = _post(sim, "k1", charge)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        counts = stats(sim)
        assert (counts["received"], counts["charges"], counts["duplicates"]) == (2, 1, 1)
        assert counts["keys"] == ["k1"]

    def test_same_charge_under_another_key_is_a_double_billing(self, sim: PmSim) -> None:
        """The same charge id under a new key is refused 409 and counted."""
        charge = make_charge(2).to_json_dict()
        assert _post(sim, "a", charge).status_code == 201
        assert _post(sim, "b", charge).status_code == 409
        assert stats(sim)["duplicate_charges"] == 1

    def test_key_is_required(self, sim: PmSim) -> None:
        """A call without Idempotency-Key is a 400."""
        assert _post(sim, None, make_charge(3).to_json_dict()).status_code == 400

    def test_failed_attempts_are_not_replayed(self, sim: PmSim) -> None:
        """A scripted 503 is not remembered for its key: the retry is processed."""
        control(sim, script=[503])
        charge = make_charge(4).to_json_dict()
        assert _post(sim, "k", charge).status_code == 503
        assert _post(sim, "k", charge).status_code == 201
        assert stats(sim)["duplicates"] == 0


class TestBehaviour:
    def test_bearer_token_or_api_key_required_when_configured(self) -> None:
        """With a token set, calls without it get 401; bearer or X-API-Key pass."""
        with PmSim(port=0, settings=SimSettings(token="t0k")) as sim:
            body = make_charge(5).to_json_dict()
            assert _post(sim, "a", body).status_code == 401
            ok = httpx.post(f"{sim.url}/charges", json=body, timeout=10,
                            headers={"Idempotency-Key": "a", "X-API-Key": "t0k"})
            assert ok.status_code == 201

    def test_void_and_delete_need_a_known_charge(self, sim: PmSim) -> None:
        """Voiding an unknown charge is 404; POST .../void and DELETE void a stored one."""
        charge = make_charge(6).to_json_dict()
        charge_id = charge["charge_id"]
        assert _post(sim, "v0", {}, f"/charges/{charge_id}/void").status_code == 404
        assert _post(sim, "c", charge).status_code == 201
        assert _post(sim, "v1", {}, f"/charges/{charge_id}/void").status_code == 200
        deleted = httpx.delete(f"{sim.url}/charges/{charge_id}",
                               headers={"Idempotency-Key": "v2"}, timeout=10)
        assert deleted.status_code == 200
        assert stats(sim)["voids"] == 2

    def test_credit_before_its_charge_is_an_order_violation(self, sim: PmSim) -> None:
        """A credit for an encounter with no charge yet is counted as out of order."""
        credit = make_charge(7, encounter="V1", transaction_type="credit").to_json_dict()
        assert _post(sim, "c", credit).status_code == 201
        assert stats(sim)["order_violations"] == 1

    def test_down_drops_calls_unanswered(self, sim: PmSim) -> None:
        """While down, business calls get no response at all."""
        control(sim, down=True)
        with pytest.raises(httpx.TransportError):
            _post(sim, "k", make_charge(8).to_json_dict())
        control(sim, down=False)
        assert _post(sim, "k", make_charge(8).to_json_dict()).status_code == 201

    def test_bad_control_is_rejected(self, sim: PmSim) -> None:
        """A script step that is not a status is a 400 from /_control."""
        response = httpx.post(f"{sim.url}/_control", json={"script": ["soon"]}, timeout=10)
        assert response.status_code == 400


def test_runs_as_a_module_and_stops_on_sigterm() -> None:
    """`python -m engine.pmsim --port 0` serves on a free port and exits 0 on SIGTERM."""
    proc = subprocess.Popen([sys.executable, "-m", "engine.pmsim", "--port", "0",
                             "--latency-ms", "1"], cwd=ROOT, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        assert httpx.get(f"http://127.0.0.1:{match[1]}/healthz", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
