"""Tests for engine.hl7.ack: the ACK's header, MSA echo, ERR segment and fallbacks."""

from __future__ import annotations

from pathlib import Path as FilePath

import pytest

from engine.errors import ChargeBridgeError
from engine.hl7.ack import AckError, build_ack
from engine.hl7.reader import parse

SAMPLES = FilePath(__file__).resolve().parents[2] / "samples" / "hl7"
OFFICE_VISIT = (SAMPLES / "dft_p03_office_visit.hl7").read_bytes()


class TestBuildAck:
    def test_header_swapped_and_version_kept(self) -> None:
        """The ACK swaps sender and receiver, keeps version and charset, and types ACK^P03^ACK."""
        ack = parse(build_ack(parse(OFFICE_VISIT), "AA"))
        assert ack.sending_application == "CHARGEBRIDGE"
        assert ack.sending_facility == "NCBILLING"
        assert ack.receiving_application == "ACMEEHR"
        assert ack.receiving_facility == "NORTHCLINIC"
        assert ack.version == "2.5.1"
        assert ack.get("MSH-9") == "ACK"
        assert ack.get_all("MSH-9") == ["ACK"]
        assert ack.message_type == "ACK^P03"
        assert ack.get("MSH-9.3") == "ACK"
        assert ack.get("MSH-11") == "P"
        assert ack.get("MSH-18") == "UNICODE UTF-8"
        assert ack.get("MSH-7") is not None and len(ack.get("MSH-7") or "") >= 14

    def test_msa_echoes_control_id(self) -> None:
        """MSA-1 is the code and MSA-2 the inbound MSH-10; the ACK has its own MSH-10."""
        ack = parse(build_ack(parse(OFFICE_VISIT), "AA"))
        assert ack.get("MSA-1") == "AA"
        assert ack.get("MSA-2") == "NC20240315-0001"
        assert ack.control_id and ack.control_id != "NC20240315-0001"
        other = parse(build_ack(parse(OFFICE_VISIT), "AA"))
        assert other.control_id != ack.control_id

    def test_generated_control_ids_do_not_repeat(self) -> None:
        """Each ACK gets its own MSH-10 (a receiver may dedupe ACKs by it)."""
        msg = parse(OFFICE_VISIT)
        ids = {parse(build_ack(msg, "AA")).control_id for _ in range(1000)}
        assert len(ids) == 1000 and all(i and len(i) == 16 for i in ids)

    def test_given_control_id(self) -> None:
        """A caller-chosen control id becomes the ACK's MSH-10."""
        ack = parse(build_ack(parse(OFFICE_VISIT), "CA", control_id="ACK-77"))
        assert ack.control_id == "ACK-77"
        assert ack.get("MSA-1") == "CA"

    def test_full_hd_fields_kept(self) -> None:
        """Application and facility fields with components are copied whole."""
        msg = parse("MSH|^~\\&|EHR^1.2.3^ISO|FAC^2.3.4^ISO|CB|BILL|2024||DFT^P03|X|T|2.6")
        ack = parse(build_ack(msg, "AA"))
        assert ack.segment("MSH") is not None
        msh = ack.segment("MSH")
        assert msh is not None
        assert msh.field(5) == "EHR^1.2.3^ISO"
        assert msh.field(6) == "FAC^2.3.4^ISO"
        assert ack.get("MSH-11") == "T"

    def test_segments_end_with_cr(self) -> None:
        """The ACK is MSH and MSA separated and terminated by \\r."""
        text = build_ack(parse(OFFICE_VISIT), "AA")
        assert text.endswith("\r")
        assert [line[:3] for line in text.split("\r") if line] == ["MSH", "MSA"]

    def test_err_segment_v25(self) -> None:
        """An AckError adds ERR with location (ERR-2), 0357 code (ERR-3), severity and text."""
        error = AckError("FT1", 2, 4, 102, "FT1-4 is not a date")
        ack = parse(build_ack(parse(OFFICE_VISIT), "AE", text="rejected", error=error))
        assert ack.get("MSA-1") == "AE"
        assert ack.get("MSA-3") == "rejected"
        assert ack.get("ERR-2.1") == "FT1"
        assert ack.get("ERR-2.2") == "2"
        assert ack.get("ERR-2.3") == "4"
        assert ack.get("ERR-3.1") == "102"
        assert ack.get("ERR-3.2") == "Data type error"
        assert ack.get("ERR-3.3") == "HL70357"
        assert ack.get("ERR-4") == "E"
        assert ack.get("ERR-8") == "FT1-4 is not a date"

    def test_err_segment_v23_uses_err1(self) -> None:
        """Versions before 2.5 carry the error in ERR-1 (segment^sequence^field^code)."""
        msg = parse("MSH|^~\\&|EHR|FAC|CB|BILL|2024||DFT^P03|X|P|2.3")
        ack = parse(build_ack(msg, "AE", error=AckError("MSH", 1, 10, 101, "missing")))
        assert ack.get("ERR-1.1") == "MSH"
        assert ack.get("ERR-1.3") == "10"
        assert ack.get("ERR-1.4.1") == "101"
        assert ack.get("ERR-1.4.2") == "Required field missing"

    def test_text_is_escaped(self) -> None:
        """Delimiters in MSA-3 and ERR-8 are escaped and read back intact."""
        error = AckError("PID", 1, 5, 207, "bad | value ^ here & there ~ \\ end")
        ack = parse(build_ack(parse(OFFICE_VISIT), "AE", text="a|b^c", error=error))
        assert ack.get("MSA-3") == "a|b^c"
        assert ack.get("ERR-8") == "bad | value ^ here & there ~ \\ end"

    def test_custom_delimiters_reused(self) -> None:
        """The ACK is written with the inbound message's delimiters."""
        msg = parse("MSH#:*!%#EHR#FAC#CB#BILL#2024##DFT:P03#X9#P#2.5")
        text = build_ack(msg, "AE", text="x#y", error=AckError("PID", 1, 3, 101, "a:b"))
        assert text.startswith("MSH#:*!%#CB#BILL#EHR#FAC#")
        ack = parse(text)
        assert ack.get("MSA-2") == "X9"
        assert ack.get("MSA-3") == "x#y"
        assert ack.get("ERR-8") == "a:b"

    def test_unparseable_with_msh_in_raw(self) -> None:
        """Without a parsed message, the MSH found in the raw bytes still drives the header."""
        raw = b"MSH|^~\\&|EHR|FAC|CB|BILL|2024||ADT^A08|C77|P|2.4\r\xff\xfe garbage"
        ack = parse(build_ack(None, "AE", raw=raw, error=AckError(code=207, text="bad bytes")))
        assert ack.get("MSA-2") == "C77"
        assert ack.receiving_application == "EHR"
        assert ack.version == "2.4"
        assert ack.get("ERR-1.4.1") == "207"

    @pytest.mark.parametrize("raw", [None, b"", b'{"not": "hl7"}', b"MSH"])
    def test_unparseable_without_header(self, raw: bytes | None) -> None:
        """With nothing usable, a default header is used and MSA-2 is empty."""
        ack = parse(build_ack(None, "AR", raw=raw, error=AckError(code=200, text="no")))
        assert ack.get("MSA-1") == "AR"
        assert ack.get("MSA-2") is None
        assert ack.sending_application == "CHARGEBRIDGE"
        assert ack.get("ERR-3.1") == "200"

    def test_bad_code(self) -> None:
        """An acknowledgement code outside AA/AE/AR/CA/CE/CR is refused."""
        with pytest.raises(ChargeBridgeError):
            build_ack(parse(OFFICE_VISIT), "OK")
