"""The committed connector reference matches the connectors' settings models."""

from __future__ import annotations

from pathlib import Path

from engine.docs_gen import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "connectors.md"


class TestConnectorReference:
    def test_committed_reference_is_current(self) -> None:
        """docs/connectors.md equals what the settings models generate today; when a
        connector setting changes, regenerate with `python -m engine.docs_gen`."""
        assert DOC.read_text() == render(), (
            "docs/connectors.md is stale: run `.venv/bin/python -m engine.docs_gen > "
            "docs/connectors.md`")

    def test_every_setting_is_described(self) -> None:
        """No connector setting reaches the reference without a description."""
        rows = [r for r in render().splitlines() if r.startswith("| `")]
        assert rows
        assert all(not r.rstrip().endswith("|  |") for r in rows), [
            r for r in rows if r.rstrip().endswith("|  |")]
