"""Test support: run a real engine (`chargebridge run`) in a subprocess on free ports.

Ports are 0 in the config; the engine logs the ports it bound (`channel.started`,
`http.started`), and this helper reads them from its JSON log file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BILLING = {
    "submitter": {"name": "RIVERSIDE FAMILY MEDICINE", "id": "RFM0001",
                  "contact_name": "BILLING OFFICE", "contact_phone": "5555550100"},
    "receiver": {"name": "DEMO CLEARINGHOUSE", "id": "CLEARHOUSE01"},
    "billing_provider": {"npi": "1234567893", "name": "RIVERSIDE FAMILY MEDICINE",
                         "tax_id": "123456789",
                         "address": {"line1": "100 MAIN ST", "city": "SPRINGFIELD",
                                     "state": "IL", "postal_code": "62701"}},
    "interchange": {"sender_id": "RFM0001", "receiver_id": "CLEARHOUSE01"},
}


def engine_config(tmp: Path, *, channels: list[dict[str, Any]] | None = None,
                  destinations: list[dict[str, Any]] | None = None,
                  store_url: str | None = None, **extra: Any) -> dict[str, Any]:
    """A config dict for one engine under `tmp`: an MLLP DFT channel to an 837P batcher."""
    return {
        "store": {"url": store_url or f"sqlite:///{tmp / 'store.db'}"},
        "http": {"host": "127.0.0.1", "port": 0},
        "out_dir": str(tmp / "out"),
        "channels": channels if channels is not None else [{
            "name": "ehr_dft",
            "source": {"type": "mllp", "host": "127.0.0.1", "port": 0},
            "accept": ["DFT^P03", "ADT^A04", "ADT^A08", "ADT^A01", "ADT^A03"],
            "mapping": str(ROOT / "mappings" / "dft_p03.yaml"),
            "destinations": ["claims_837p"],
        }],
        "destinations": destinations if destinations is not None else [{
            "name": "claims_837p", "type": "x12_837p", "directory": "837p",
            "batch_seconds": 0.5, **BILLING,
        }],
        **extra,
    }


def _die_with_test_run() -> None:
    """In the engine child: get SIGTERM if the test run dies (killed by a timeout, say)
    before it could stop the engine, so no engine outlives its test."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll until predicate() is truthy; fail the test with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class EngineProcess:
    """One `chargebridge run` subprocess with its log file and bound ports."""

    def __init__(self, tmp: Path, config: dict[str, Any], name: str = "engine",
                 role: str = "all", node: str = "node-1") -> None:
        self.tmp = tmp
        self.config_path = tmp / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp / f"{name}.log"
        self.role = role
        self.node = node
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.http_port: int | None = None

    def start(self, timeout: float = 60.0) -> EngineProcess:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--config", str(self.config_path),
             "--role", self.role, "--node", self.node],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env,
            start_new_session=True, preexec_fn=_die_with_test_run)
        log.close()
        wait_for(self._started, timeout, what=f"engine start (log {self.log_path})")
        return self

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        if not self.log_path.exists():
            return events
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return events

    def _started(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"engine exited with {self.proc.returncode}:\n"
                                 + self.log_path.read_text(errors="replace")[-4000:])
        text = self.log_path.read_text(errors="replace")[self._log_offset:]
        started = False
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "channel.started":
                self.ports[event["channel"]] = event["port"]
            elif event.get("event") == "http.started":
                self.http_port = event["port"]
            elif event.get("event") == "engine.started" and event.get("role") != "process":
                started = True
        return started

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        if sig == signal.SIGKILL:
            os.killpg(self.proc.pid, signal.SIGKILL)  # parent and its processor child
        else:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)
