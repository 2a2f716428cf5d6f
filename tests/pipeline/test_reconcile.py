"""`chargebridge reconcile --since DATE`: every message whose lines in do not add up to
charges out (routed, held, dropped by a named rule) is listed; balanced ones are not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from engine.store import open_store
from engine.store.records import ERROR, PROCESSED, InboundRecord, MessageOutcome
from tests.engine_process import ROOT


def _message(store, control_id: str, outcome: dict) -> int:  # type: ignore[no-untyped-def]
    [j] = store.journal([InboundRecord("ehr", b"MSH|" + control_id.encode(), "mllp",
                                       control_id=control_id)])
    store.complete_message(MessageOutcome(j.message_id, control_id=control_id, **outcome))
    return j.message_id


class TestReconcile:
    def test_lists_only_messages_whose_counts_do_not_add_up(self, tmp_path: Path) -> None:
        """A message that lost a line and an ERROR message are listed with their counts;
        a balanced one and one whose payment line was dropped by a rule are not."""
        db = tmp_path / "store.db"
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{db}"}}))
        store = open_store(f"sqlite:///{db}", fsync=False)
        _message(store, "BALANCED", {"status": PROCESSED,
                                     "counts": {"lines_in": 3, "charges": 3, "dropped": 0}})
        _message(store, "PAYMENT", {"status": PROCESSED,
                                    "counts": {"lines_in": 2, "charges": 1, "dropped": 1}})
        lost = _message(store, "LOST-LINE", {"status": PROCESSED,
                                             "counts": {"lines_in": 3, "charges": 2,
                                                        "dropped": 0}})
        failed = _message(store, "BROKEN", {"status": ERROR, "reason": "MappingError: x"})
        result = subprocess.run(
            [sys.executable, "-m", "engine.cli", "reconcile", "--config", str(config),
             "--since", "2000-01-01"], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert result.returncode == 1, result.stderr
        lines = result.stdout.strip().splitlines()
        assert any(f"message {lost} " in ln and "3 line(s) in, 2 out" in ln for ln in lines)
        assert any(f"message {failed} " in ln and "ERROR" in ln for ln in lines)
        assert not any("BALANCED" in ln or "PAYMENT" in ln for ln in lines)
        assert lines[-1] == "2 message(s) do not balance"

    def test_everything_balanced_exits_zero(self, tmp_path: Path) -> None:
        """With nothing to report the command says so and exits 0."""
        db = tmp_path / "store.db"
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{db}"}}))
        store = open_store(f"sqlite:///{db}", fsync=False)
        _message(store, "OK", {"status": PROCESSED,
                               "counts": {"lines_in": 1, "charges": 1, "dropped": 0}})
        result = subprocess.run(
            [sys.executable, "-m", "engine.cli", "reconcile", "--config", str(config),
             "--since", "2000-01-01"], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert result.returncode == 0
        assert "balances" in result.stdout
