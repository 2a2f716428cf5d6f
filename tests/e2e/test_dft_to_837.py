"""End to end over real sockets: DFT^P03 over MLLP -> journal -> charges -> 837P files."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import pytest

from bench.messages import make_dft
from engine.hl7.mllp import send_messages
from engine.store.sqlite import SqliteStore
from engine.x12.validate import validate_837
from tests.engine_process import ROOT, EngineProcess, engine_config, wait_for

SAMPLE = ROOT / "samples" / "hl7" / "dft_p03_office_visit.hl7"


def _files(tmp: Path) -> list[Path]:
    return sorted((tmp / "out" / "837p").glob("*.837"))


def _line_ids(files: list[Path]) -> list[str]:
    return [m for f in files for m in re.findall(r"REF\*6R\*([^~]+)~", f.read_text())]


def _send(port: int, messages: list[bytes]) -> list[bytes]:
    return asyncio.run(send_messages("127.0.0.1", port, messages))


class TestDftBecomesClaim:
    def test_three_ft1_become_one_valid_claim_with_three_lines(self, tmp_path: Path) -> None:
        """A DFT with 3 FT1 segments becomes 3 charges and one claim with 3 service lines
        in an 837P file that pyx12 accepts."""
        engine = EngineProcess(tmp_path, engine_config(tmp_path)).start()
        try:
            raw = SAMPLE.read_bytes().replace(b"\n", b"\r")
            control_id = raw.split(b"|")[9].decode()
            [ack] = _send(engine.ports["ehr_dft"], [raw])
            assert f"MSA|AA|{control_id}".encode() in ack
            files = wait_for(lambda: _files(tmp_path), what="an 837P file")
            text = files[0].read_text()
            assert text.count("CLM*") == 1
            assert text.count("LX*") == 3
            assert {"99213", "93000", "36415"} <= set(re.findall(r"SV1\*HC:(\d{5})", text))
            verdict = validate_837(text)
            assert verdict.ok, verdict.errors
            store = SqliteStore(tmp_path / "store.db")
            [message] = store.search_messages(channel="ehr_dft")
            assert message.status == "PROCESSED"
            charges = store.charges_for_message(message.id)
            assert len(charges) == 3
            wait_for(lambda: all(s == "SENT" for _, s, _ in
                                 store.charges_for_message(message.id)), what="charges SENT")
        finally:
            assert engine.stop() == 0


class TestKillMidStream:
    @pytest.mark.slow
    def test_sigkill_loses_nothing_acknowledged_and_bills_each_line_once(
            self, tmp_path: Path) -> None:
        """500 DFTs sent, the engine SIGKILLed mid-stream and restarted: every message that
        got an AA is stored, and each of its FT1 lines appears exactly once in the 837P
        files."""
        engine = EngineProcess(tmp_path, engine_config(tmp_path)).start()
        messages = [make_dft(i, lines=2) for i in range(500)]
        acked: set[int] = set()

        async def sender(conn: int) -> None:
            port = engine.ports["ehr_dft"]
            mine = [i for i in range(conn, 500, 4)]
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                for i in mine:
                    writer.write(b"\x0b" + messages[i] + b"\x1c\r")
                    await writer.drain()
                    reply = await reader.readuntil(b"\x1c\r")
                    if b"MSA|AA|" in reply:
                        acked.add(i)
                    if len(acked) >= 250 and conn == 0 and engine.proc.poll() is None:
                        engine.signal(signal.SIGKILL)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                return

        async def send_all() -> None:
            await asyncio.gather(*(sender(c) for c in range(4)))

        asyncio.run(send_all())
        engine.proc.wait(30)
        assert 250 <= len(acked) < 500, "the kill should land mid-stream"
        engine.start()
        try:
            store = SqliteStore(tmp_path / "store.db")
            stored_ids = {m.control_id for m in _all_messages(store)}
            for i in acked:
                assert f"BENCH{i:09d}" in stored_ids
            expected = 2 * len({m.control_id for m in _all_messages(store)})
            wait_for(lambda: len(_line_ids(_files(tmp_path))) >= expected, timeout=90,
                     what=f"{expected} service lines in 837P files")
            lines = _line_ids(_files(tmp_path))
            assert len(lines) == len(set(lines)) == expected
            for f in _files(tmp_path)[:3]:
                assert validate_837(f.read_text()).ok
        finally:
            assert engine.stop() == 0


def _all_messages(store: SqliteStore) -> list:
    out, before = [], None
    while page := store.search_messages(before_id=before, limit=500):
        out.extend(page)
        before = page[-1].id
    return out
