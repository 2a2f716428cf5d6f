"""Messy FT1 lines through a real engine: ingest node plus ProcessingWorkers with the shipped
DFT mapping. One bad line holds only its own charge, with a finding naming the field; ADT
messages on the same channel update the context and end PROCESSED."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from engine.charge import Finding
from engine.context import load_context
from engine.hl7.mllp import send_messages
from engine.runtime import IngestNode, ProcessingWorkers
from engine.store import open_store
from tests.inbound.conftest import ROOT, StartNode, channel, mllp_port, msa, sample, wait_until

VISIT = sample("dft_p03_office_visit")

Run = Callable[[list[bytes]], Awaitable[tuple[IngestNode, list[bytes]]]]


@pytest.fixture
async def run(start_node: StartNode) -> AsyncIterator[Run]:
    """Start an engine with processing on, send messages, wait until all are processed."""
    workers: list[ProcessingWorkers] = []

    async def go(messages: list[bytes]) -> tuple[IngestNode, list[bytes]]:
        node = await start_node([channel(mapping=str(ROOT / "mappings" / "dft_p03.yaml"))])
        config = node.config
        store = open_store(config.store.url, fsync=False, base_dir=str(config.base_dir))
        processing = ProcessingWorkers(config, store, "node-1")
        processing.start()
        workers.append(processing)
        replies = await send_messages("127.0.0.1", mllp_port(node), messages)
        await wait_until(lambda: not node.store.search_messages(status="RECEIVED"),
                         what="every message processed")
        return node, replies

    yield go
    for processing in workers:
        processing.stop()


def _charges(node: IngestNode) -> list[tuple[Any, str, list[Finding]]]:
    [message] = node.store.search_messages(message_type="DFT^P03")
    assert message.status == "PROCESSED", message.reason
    return sorted(node.store.charges_for_message(message.id),
                  key=lambda c: c[0].source.get("line", 0))


class TestOneBadLine:
    async def test_invalid_service_date_holds_only_that_charge(self, run: Run) -> None:
        """FT1-4 of the second line is not a date: the message is AA and PROCESSED, that
        charge is HELD with a finding naming its field, the other two are not held."""
        raw = VISIT.replace(b"FT1|2|TX9002||20240315|", b"FT1|2|TX9002||20241399|")
        node, [reply] = await run([raw])
        assert msa(reply)[1] == "AA"
        charges = _charges(node)
        assert len(charges) == 3
        held = [(c, f) for c, status, f in charges if status == "HELD"]
        assert len(held) == 1 and held[0][0].procedure.code == "93000"
        assert any("service_date" in (f.field or "") or "FT1-4" in f.message
                   for f in held[0][1])

    async def test_non_numeric_quantity_holds_only_that_charge(self, run: Run) -> None:
        """FT1-10 of the third line is not a number: only that charge is HELD, its finding
        naming the units field."""
        raw = VISIT.replace(b"Routine venipuncture^C4|||1|", b"Routine venipuncture^C4|||two|")
        node, [reply] = await run([raw])
        assert msa(reply)[1] == "AA"
        statuses = {c.procedure.code: (status, f) for c, status, f in _charges(node)}
        assert statuses["36415"][0] == "HELD"
        assert any("units" in (f.field or "") or "FT1-10" in f.message
                   for f in statuses["36415"][1])
        assert statuses["99213"][0] != "HELD" or not any(
            "units" in (f.field or "") for f in statuses["99213"][1])


class TestAdtThroughTheEngine:
    async def test_adt_messages_end_processed_and_keep_context(self, run: Run) -> None:
        """An A04 then an A08 are acknowledged (CA: they ask for enhanced mode), end
        PROCESSED with no charges, and the context holds the A08's address."""
        node, replies = await run([sample("adt_a04_register"), sample("adt_a08_update")])
        assert [msa(r)[1] for r in replies] == ["CA", "CA"]  # the samples ask MSH-15 AL
        messages = node.store.search_messages()
        assert {m.status for m in messages} == {"PROCESSED"}
        assert all(not node.store.charges_for_message(m.id) for m in messages)
        known = load_context(node.store, "MRN300415", "V20240322004")
        assert known.fields["patient.address.line1"] == "15 Cedar Bluff Ln"
