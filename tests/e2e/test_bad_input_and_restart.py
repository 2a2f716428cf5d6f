"""Bad input gets its documented answer and is kept; SIGTERM drains; a restart resumes
every message acknowledged but not yet processed."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from bench.messages import make_dft
from engine.hl7.mllp import send_messages
from engine.store.sqlite import SqliteStore
from tests.engine_process import EngineProcess, engine_config, wait_for


def _send(port: int, messages: list[bytes]) -> list[bytes]:
    return asyncio.run(send_messages("127.0.0.1", port, messages))


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    proc = EngineProcess(tmp_path, engine_config(tmp_path)).start()
    yield proc
    proc.stop()


def _msa(reply: bytes) -> list[str]:
    for segment in reply.decode().split("\r"):
        if segment.startswith("MSA|"):
            return segment.split("|")
    raise AssertionError(f"no MSA in {reply!r}")


def _err(reply: bytes) -> str:
    return next(s for s in reply.decode().split("\r") if s.startswith("ERR|"))


class TestBadInput:
    def test_non_hl7_bytes_get_ae_and_are_stored_as_error(self, engine: EngineProcess,
                                                         tmp_path: Path) -> None:
        """JSON sent instead of HL7 is answered AE with an ERR segment and kept raw as ERROR."""
        [reply] = _send(engine.ports["ehr_dft"], [b'{"resourceType": "Patient"}'])
        assert _msa(reply)[1] == "AE"
        assert _err(reply)
        store = SqliteStore(tmp_path / "store.db")
        [message] = store.search_messages(status="ERROR")
        assert message.raw == b'{"resourceType": "Patient"}'

    def test_missing_control_id_gets_ae_naming_msh_10(self, engine: EngineProcess,
                                                      tmp_path: Path) -> None:
        """A message without MSH-10 is answered AE whose ERR points at MSH-10; stored ERROR."""
        raw = make_dft(1).replace(b"BENCH000000001", b"")
        [reply] = _send(engine.ports["ehr_dft"], [raw])
        assert _msa(reply)[1] == "AE"
        assert "MSH^1^10" in _err(reply)
        store = SqliteStore(tmp_path / "store.db")
        [message] = store.search_messages(status="ERROR")
        assert "MSH-10" in (message.reason or "")

    def test_unaccepted_type_gets_ar(self, engine: EngineProcess, tmp_path: Path) -> None:
        """A message type the channel does not accept is answered AR and stored ERROR."""
        raw = make_dft(2).replace(b"DFT^P03", b"ORU^R01")
        [reply] = _send(engine.ports["ehr_dft"], [raw])
        assert _msa(reply)[1:3] == ["AR", "BENCH000000002"]
        store = SqliteStore(tmp_path / "store.db")
        [message] = store.search_messages(status="ERROR")
        assert message.control_id == "BENCH000000002"

    def test_oversize_frame_closes_connection_and_is_logged(self, engine: EngineProcess,
                                                            tmp_path: Path) -> None:
        """A frame over the 1 MiB default closes the connection with a logged reason."""
        huge = make_dft(3) + b"NTE|1||" + b"x" * (2 << 20) + b"\r"
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, OSError)):
            _send(engine.ports["ehr_dft"], [huge])
        wait_for(lambda: any(e.get("event") == "mllp.frame_too_large"
                             for e in engine.log_events()), what="the oversize log line")
        store = SqliteStore(tmp_path / "store.db")
        assert store.search_messages() == []

    def test_resent_control_id_is_acked_again_but_processed_once(
            self, engine: EngineProcess, tmp_path: Path) -> None:
        """The same MSH-10 from the same sender is answered AA twice and stored once."""
        raw = make_dft(4)
        first, second = _send(engine.ports["ehr_dft"], [raw, raw])
        assert _msa(first)[1] == _msa(second)[1] == "AA"
        store = SqliteStore(tmp_path / "store.db")
        assert len(store.search_messages()) == 1


class TestDrainAndResume:
    def test_acknowledged_messages_are_processed_after_restart(self, tmp_path: Path) -> None:
        """Messages acknowledged by an ingest-only node (nothing processing) stay RECEIVED
        across a SIGTERM and are all processed once the full engine starts again."""
        config = engine_config(tmp_path)
        ingest = EngineProcess(tmp_path, config, role="ingest").start()
        replies = _send(ingest.ports["ehr_dft"], [make_dft(i) for i in range(20)])
        assert all(_msa(r)[1] == "AA" for r in replies)
        ingest.signal(signal.SIGTERM)
        assert ingest.proc is not None and ingest.proc.wait(30) == 0
        assert any(e.get("event") == "engine.stopped" for e in ingest.log_events())
        store = SqliteStore(tmp_path / "store.db")
        assert store.count_by_status("messages") == {"RECEIVED": 20}
        engine = EngineProcess(tmp_path, config).start()
        try:
            wait_for(lambda: store.count_by_status("messages") == {"PROCESSED": 20},
                     what="all 20 messages processed")
            assert store.count_by_status("charges").get("QUEUED", 0) + \
                store.count_by_status("charges").get("SENT", 0) == 60
        finally:
            assert engine.stop() == 0


class TestDuplicateChargesInOneBatch:
    def test_same_services_resent_under_a_new_control_id_are_held(self, tmp_path: Path) -> None:
        """Two messages billing the same services for the same patient and day, processed
        in one batch, bill once: the second message's charges are held as duplicates."""
        config = engine_config(tmp_path)
        ingest = EngineProcess(tmp_path, config, role="ingest").start()
        first = make_dft(50)
        again = first.replace(b"BENCH000000050", b"RESENT00000050")
        _send(ingest.ports["ehr_dft"], [first, again])
        assert ingest.stop() == 0
        engine = EngineProcess(tmp_path, config).start()
        try:
            store = SqliteStore(tmp_path / "store.db")
            wait_for(lambda: store.count_by_status("messages") == {"PROCESSED": 2},
                     what="both processed")
            [resent] = store.search_messages(control_id="RESENT00000050")
            statuses = [(s, {f.rule for f in fs}) for _, s, fs in
                        store.charges_for_message(resent.id)]
            assert statuses and all(s == "HELD" and "scrub.duplicate" in rules
                                    for s, rules in statuses), statuses
            [original] = store.search_messages(control_id="BENCH000000050")
            assert all(s != "HELD" for _, s, _ in store.charges_for_message(original.id))
        finally:
            assert engine.stop() == 0
