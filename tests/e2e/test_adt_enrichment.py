"""ADT context reaches charges through the running engine: a DFT without IN1 is billed
to the coverage an earlier ADT^A04 registered, and a DFT whose birth date disagrees with
the registration is held."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.messages import make_dft
from engine.hl7.mllp import send_messages
from engine.store.sqlite import SqliteStore
from tests.engine_process import ROOT, EngineProcess, engine_config, wait_for

ADT = (ROOT / "samples" / "hl7" / "adt_a04_register.hl7").read_bytes().replace(b"\n", b"\r")


def _dft_for_registered_patient(control_id: str, birth_date: str = "19910807") -> bytes:
    """A DFT for the ADT sample's patient and visit, without any IN1 segment."""
    segments = make_dft(7, lines=1).decode().split("\r")
    out = []
    for seg in segments:
        if seg.startswith("IN1|") or not seg:
            continue
        fields = seg.split("|")
        if seg.startswith("MSH|"):
            fields[9] = control_id
        elif seg.startswith("PID|"):
            fields[3], fields[5], fields[7] = "MRN300415", "Lindqvist^Astrid^Maj", birth_date
        elif seg.startswith("PV1|"):
            fields[19] = "V20240322004"
        elif seg.startswith("FT1|"):
            fields[4] = "20240322"  # the registered visit's day
        out.append("|".join(fields))
    return ("\r".join(out) + "\r").encode()


class TestAdtEnrichment:
    def test_dft_without_coverage_is_billed_to_the_registered_payer(
            self, tmp_path: Path) -> None:
        """The charge carries the ADT's IN1 payer and records that it came from the ADT;
        a mismatching birth date holds the other charge with a demographic finding."""
        engine = EngineProcess(tmp_path, engine_config(tmp_path)).start()
        try:
            port = engine.ports["ehr_dft"]
            asyncio.run(send_messages("127.0.0.1", port, [ADT]))
            store = SqliteStore(tmp_path / "store.db")
            wait_for(lambda: store.count_by_status("messages").get("PROCESSED") == 1,
                     what="the ADT processed")
            asyncio.run(send_messages("127.0.0.1", port, [
                _dft_for_registered_patient("ENRICH-1"),
                _dft_for_registered_patient("ENRICH-2", birth_date="19900101")]))
            wait_for(lambda: store.count_by_status("messages").get("PROCESSED") == 3,
                     what="both DFTs processed")
            [ok_msg] = store.search_messages(control_id="ENRICH-1")
            [(charge, status, findings)] = store.charges_for_message(ok_msg.id)
            assert charge.coverage and charge.coverage[0].payer_name == "UnitedHealthcare"
            assert "coverage" in str(charge.source.get("enriched", {}))
            assert not [f for f in findings if f.severity == "hold"], findings
            assert status in ("QUEUED", "SENT")
            [bad_msg] = store.search_messages(control_id="ENRICH-2")
            [(_, bad_status, bad_findings)] = store.charges_for_message(bad_msg.id)
            assert bad_status == "HELD"
            assert any("demographic" in f.rule for f in bad_findings), bad_findings
        finally:
            assert engine.stop() == 0
