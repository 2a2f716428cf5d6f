"""ack_timing: processed — the ACK waits for mapping and scrubbing: AA when the charges
go on, AE carrying the hold reason in ERR when the scrubber holds one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.messages import make_dft
from engine.hl7.mllp import send_messages
from tests.engine_process import EngineProcess, engine_config


class TestAckAfterProcessing:
    def test_ack_reports_the_scrub_outcome(self, tmp_path: Path) -> None:
        """A clean DFT gets AA; one whose rendering NPI fails its check digit gets AE with
        the scrubber's reason in the ERR segment."""
        config = engine_config(tmp_path)
        config["channels"][0]["ack_timing"] = "processed"
        engine = EngineProcess(tmp_path, config).start()
        try:
            good = make_dft(60)
            bad = make_dft(61).replace(b"1234567893^Okafor", b"1234567890^Okafor")
            good_ack, bad_ack = asyncio.run(send_messages(
                "127.0.0.1", engine.ports["ehr_dft"], [good, bad]))
            assert b"MSA|AA|BENCH000000060" in good_ack
            assert b"MSA|AE|BENCH000000061" in bad_ack
            err = next(s for s in bad_ack.decode().split("\r") if s.startswith("ERR|"))
            assert "NPI" in err
        finally:
            assert engine.stop() == 0
