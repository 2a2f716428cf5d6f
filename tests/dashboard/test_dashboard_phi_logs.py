"""PHI from the samples never reaches the engine's logs, whatever operators do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from engine.api.hl7_fields import segments
from engine.api.testing import PASSWORD, send_to, write_config
from engine.auth.users import add_user
from engine.store import open_store

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "samples" / "hl7").glob("*.hl7"))
# Names, birth dates, addresses and member ids, by segment and field.
PHI_FIELDS = {"PID": (5, 7, 11, 13), "IN1": (16, 18, 19, 36, 49), "GT1": (3, 5, 8, 12),
              "NK1": (2, 4)}


def sample_phi() -> set[str]:
    """Every PHI component (at least 4 characters) in the sample messages."""
    values: set[str] = set()
    for path in SAMPLES:
        for seg in segments(path.read_bytes(), masked=False):
            for field in seg["fields"]:
                if field["position"] in PHI_FIELDS.get(seg["name"], ()):
                    for part in field["value"].replace("~", "^").split("^"):
                        if len(part) >= 4:
                            values.add(part)
    return values


class _Stderr:
    """Collects the engine's stderr lines on a thread."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, event: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if f'"{event}"' in line:
                    return json.loads(line)  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise AssertionError(f"engine never logged {event}: {''.join(self.lines)[-2000:]}")


class TestPhiNeverLogged:
    def test_samples_and_operator_actions_leave_no_phi_in_logs(self, tmp_path: Path) -> None:
        """Journaling every sample, viewing it, searching by MRN, editing, failing a login
        with a patient's name: the JSON logs carry none of the samples' PHI."""
        phi = sample_phi()
        assert {"Rivera", "19780412", "XOH884512037"} <= phi
        config = write_config(tmp_path, log_level="debug")  # the most the engine says
        store = open_store("sqlite:///var/chargebridge.db", fsync=False, base_dir=str(tmp_path))
        add_user(store, "ops", PASSWORD, "operator")
        store.close()
        env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--role", "ingest", "--config",
             str(config)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env=env)
        logs = _Stderr(engine.stderr)
        try:
            mllp_port = logs.wait_for("channel.started")["port"]
            http_port = logs.wait_for("http.started")["port"]
            raws = [p.read_bytes() for p in SAMPLES]
            replies = send_to(mllp_port, raws)
            assert len(replies) == len(raws)
            # Unreadable input is journaled as ERROR and answered AE: its log line too.
            broken = b"PID|1||MRN100234^^^NORTHCLINIC^MR||Rivera^Elena^Marie||19780412"
            send_to(mllp_port, [broken])
            base = f"http://127.0.0.1:{http_port}"
            with httpx.Client(base_url=base, timeout=30) as client:
                assert client.post("/api/session", json={"name": "Rivera",
                                                         "password": "19780412"}
                                   ).status_code == 401
                login = client.post("/api/session", json={"name": "ops", "password": PASSWORD})
                client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
                ids = [m["id"] for m in client.get("/api/messages").json()["items"]]
                for mid in ids:
                    assert client.get(f"/api/messages/{mid}").status_code == 200
                    assert client.get(f"/messages/{mid}").status_code == 200
                client.get("/api/messages", params={"mrn": "MRN100234"})
                raw = raws[0].decode().replace("Rivera", "Rivera-Smith")
                assert client.post(f"/api/messages/{ids[-1]}/edit",
                                   json={"raw": raw}).status_code == 200
                client.post("/api/messages/reprocess", json={"message_ids": ids})
        finally:
            engine.send_signal(signal.SIGTERM)
            engine.wait(60)
            logs.thread.join(10)
        text = "".join(logs.lines)
        assert '"message.journaled"' in text and '"audit.recorded"' in text
        leaked = sorted(value for value in phi | {"Rivera-Smith", "MRN100234"} if value in text)
        assert leaked == []
