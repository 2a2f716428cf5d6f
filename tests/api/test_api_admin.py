"""Users (API and CLI), the read-only audit log, retention view and /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from engine import audit, metrics
from engine.api.testing import login_client, sample_message, send, write_config
from engine.auth.users import authenticate


class TestUsers:
    def test_admin_adds_a_user_who_can_log_in(self, node: Any, base_url: str) -> None:
        """A user created through the API logs in with its role; the change is audited."""
        admin = login_client(base_url, "admin")
        made = admin.post("/api/users", json={"name": "billing.lead", "role": "operator",
                                              "password": "a long enough secret"})
        assert made.status_code == 201 and made.json()["role"] == "operator"
        assert "password" not in made.text and "argon2" not in made.text
        taken = admin.post("/api/users", json={"name": "billing.lead", "role": "viewer",
                                               "password": "a long enough secret"})
        assert taken.status_code == 409
        short = admin.post("/api/users", json={"name": "x", "role": "viewer", "password": "abc"})
        assert short.status_code == 409 and "too short" in short.json()["detail"]
        assert login_client(base_url, "billing.lead", "a long enough secret")
        assert audit.read(node.store, action="user.add")[-1].target == "user:billing.lead"

    def test_last_admin_cannot_be_demoted(self, base_url: str) -> None:
        """The last active admin keeps its role (no one could manage users otherwise)."""
        admin = login_client(base_url, "admin")
        refused = admin.patch("/api/users/admin", json={"role": "viewer"})
        assert refused.status_code == 409 and "last active admin" in refused.json()["detail"]

    def test_cli_adds_the_first_admin_from_stdin(self, tmp_path: Path) -> None:
        """`chargebridge user add` reads the password from stdin and stores an argon2 hash."""
        config = write_config(tmp_path)
        env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", "user", "add", "root", "--role", "admin",
             "--config", str(config)], input="first admin secret\n", capture_output=True,
            text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "user root added with role admin" in done.stdout
        from engine.store import open_store

        store = open_store("sqlite:///var/chargebridge.db", fsync=False, base_dir=str(tmp_path))
        assert authenticate(store, "root", "first admin secret") is not None
        stored = store._query("SELECT password_hash FROM users WHERE name = 'root'")[0][0]
        assert stored.startswith("$argon2id$") and "first admin secret" not in stored
        again = subprocess.run(
            [sys.executable, "-m", "engine.cli", "user", "add", "root", "--role", "viewer",
             "--config", str(config)], input="first admin secret\n", capture_output=True,
            text=True, env=env, timeout=60)
        assert again.returncode == 1 and "already exists" in again.stderr


class TestAudit:
    def test_audit_is_read_only_in_the_api(self, base_url: str) -> None:
        """The OpenAPI document offers only GET on /api/audit; other methods are refused."""
        admin = login_client(base_url, "admin")
        spec = admin.get("/openapi.json").json()
        assert set(spec["paths"]["/api/audit"]) == {"get"}
        assert admin.delete("/api/audit").status_code == 405
        assert admin.get("/api/audit").json()[0]["action"] == "login"


class TestRetentionAndMetrics:
    def test_retention_view_shows_store_size(self, base_url: str) -> None:
        """The retention view reports the SQLite file size and each channel's setting."""
        view = login_client(base_url, "viewer").get("/api/system/retention").json()
        assert view["store"]["backend"] == "sqlite" and view["store"]["bytes"] > 0
        assert view["channels"][0]["retention_days"] == 30

    def test_metrics_per_channel_and_ack_histogram(self, node: Any, base_url: str) -> None:
        """/metrics counts received messages per channel and renders ACK histograms."""
        send(node, [sample_message("MET1"), sample_message("MET2")])
        metrics.observe_ack("clinic", 0.003)
        text = login_client(base_url, "viewer").get("/metrics").text
        assert 'chargebridge_messages_received_total{channel="clinic"} 2' in text
        assert 'chargebridge_charges_held{channel="clinic"} 0' in text
        assert 'chargebridge_ack_latency_seconds_bucket{channel="clinic",le="0.005"}' in text
        assert "# TYPE chargebridge_delivery_latency_seconds histogram" in text
        anon = httpx.get(f"{base_url}/metrics")
        assert anon.status_code == 401


class TestHistogram:
    def test_buckets_are_cumulative(self) -> None:
        """Each bucket counts every observation at or below its bound; +Inf counts all."""
        hist = metrics.Histogram("h_seconds", "test", "channel", (0.1, 1.0))
        for value in (0.05, 0.5, 5.0):
            hist.observe("a", value)
        text = "\n".join(hist.render())
        assert 'h_seconds_bucket{channel="a",le="0.1"} 1' in text
        assert 'h_seconds_bucket{channel="a",le="1"} 2' in text
        assert 'h_seconds_bucket{channel="a",le="+Inf"} 3' in text
        assert 'h_seconds_count{channel="a"} 3' in text
