"""Tests for engine.hl7.reader: paths, repetitions, groups, escapes, separators, charsets."""

from __future__ import annotations

from pathlib import Path as FilePath

import pytest

from engine.errors import ChargeBridgeError, HL7ReadError
from engine.hl7.encoding import Encoding, escape, unescape
from engine.hl7.reader import Message, PathSyntaxError, compile_path, parse

SAMPLES = FilePath(__file__).resolve().parents[2] / "samples" / "hl7"


def sample(name: str) -> Message:
    return parse((SAMPLES / name).read_bytes())


MINIMAL = "MSH|^~\\&|SEND|FAC|RECV|RFAC|20240101120000||ADT^A01|CTRL1|P|{version}\rPID|1||M1\r"


class TestHeader:
    def test_msh_attributes(self) -> None:
        """The MSH shortcuts read control id, type, trigger, version and both endpoints."""
        msg = sample("dft_p03_office_visit.hl7")
        assert msg.control_id == "NC20240315-0001"
        assert msg.message_type == "DFT^P03"
        assert msg.trigger == "P03"
        assert msg.version == "2.5.1"
        assert msg.sending_application == "ACMEEHR"
        assert msg.sending_facility == "NORTHCLINIC"
        assert msg.receiving_application == "CHARGEBRIDGE"
        assert msg.receiving_facility == "NCBILLING"
        assert msg.encoding == Encoding("|", "^", "~", "\\", "&")

    def test_msh_field_numbering(self) -> None:
        """MSH-1 is the field separator, MSH-2 the encoding characters, MSH-3 the sender."""
        msg = sample("dft_p03_office_visit.hl7")
        assert msg.get("MSH-1") == "|"
        assert msg.get("MSH-2") == "^~\\&"
        assert msg.get("MSH-3") == "ACMEEHR"
        assert msg.get("MSH-9.3") == "DFT_P03"
        assert msg.get("MSH-18") == "UNICODE UTF-8"

    def test_missing_type_and_control_id_are_none(self) -> None:
        """A message without MSH-9 or MSH-10 still parses; the shortcuts are None."""
        msg = parse("MSH|^~\\&|A|B|C|D|2024\rPID|1")
        assert msg.control_id is None
        assert msg.message_type is None
        assert msg.trigger is None
        assert msg.version is None

    def test_type_without_trigger(self) -> None:
        """MSH-9 with only a message code gives just the code."""
        assert parse("MSH|^~\\&|A|B|C|D|2024||ACK|X|P|2.3").message_type == "ACK"

    @pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7",
                                         "2.7.1", "2.8"])
    def test_versions(self, version: str) -> None:
        """Versions 2.3 to 2.8 read the same way."""
        msg = parse(MINIMAL.format(version=version))
        assert msg.version == version
        assert msg.get("PID-3") == "M1"

    def test_truncation_character_in_msh2(self) -> None:
        """A v2.7+ MSH-2 with the truncation character (^~\\&#) keeps '#' as plain text."""
        msg = parse("MSH|^~\\&#|A|B|C|D|2024||ADT^A01|X|P|2.7\rPID|1||M#1^^^H")
        assert msg.get("MSH-2") == "^~\\&#"
        assert msg.get("PID-3") == "M#1"


class TestPaths:
    def test_field_defaults_to_first_component_of_first_repetition(self) -> None:
        """PID-3 means the first component of the first repetition of the first PID."""
        msg = sample("dft_p03_office_visit.hl7")
        assert msg.get("PID-3") == "MRN100234"
        assert msg.get("PID-3.4") == "NORTHCLINIC"
        assert msg.get("PID-5") == "Rivera"
        assert msg.get("PID-5.2") == "Elena"
        assert msg.get("PID-11.3") == "Springfield"

    def test_subcomponents(self) -> None:
        """A.B.C addresses a subcomponent; a component without it gives its first part."""
        msg = parse("MSH|^~\\&|A\rFT1|1|||20240101||CG|X|||1|125.00&USD^^x&y")
        assert msg.get("FT1-11") == "125.00"
        assert msg.get("FT1-11.1") == "125.00"
        assert msg.get("FT1-11.1.2") == "USD"
        assert msg.get("FT1-11.3.2") == "y"
        assert msg.get("FT1-11.1.3") is None

    def test_repetitions(self) -> None:
        """[*] expands every repetition, [n] picks the n-th, a plain field reads the first."""
        msg = parse("MSH|^~\\&|A\rFT1|1" + "|" * 25 + "26^Prof~TC^Tech~~GA")
        assert msg.get("FT1-26") == "26"
        assert msg.get_all("FT1-26") == ["26"]
        assert msg.get_all("FT1-26[*]") == ["26", "TC", "GA"]
        assert msg.get("FT1-26[2]") == "TC"
        assert msg.get("FT1-26[2].2") == "Tech"
        assert msg.get("FT1-26[3]") is None
        assert msg.get("FT1-26[9]") is None

    def test_segment_index(self) -> None:
        """IN1[2]-3 reads the second IN1; DG1[*]-3.1 reads every DG1 in order."""
        msg = sample("dft_p03_office_visit.hl7")
        assert msg.get("IN1-3") == "00621"
        assert msg.get("IN1[2]-3.1") == "60054"
        assert msg.get("IN1[3]-3.1") is None
        assert msg.get_all("DG1[*]-3.1") == ["E11.9", "I10"]
        assert msg.get_all("FT1[*]-25.1") == ["99213", "93000", "36415"]
        assert msg.get("IN1[2]-49") == "W201447789"

    def test_missing_trailing_fields(self) -> None:
        """Fields past the last one sent, absent segments and empty values are None/[]."""
        msg = parse("MSH|^~\\&|A\rPID|1||M1\rPV1")
        assert msg.get("PID-30") is None
        assert msg.get("PID-2") is None
        assert msg.get("PV1-2") is None
        assert msg.get("ZZZ-1") is None
        assert msg.get_all("PID-30[*]") == []
        assert msg.get_all("OBX[*]-5") == []
        assert msg.segment("PID") is not None
        pid = msg.segment("PID")
        assert pid is not None and pid.field(30) == "" and pid.field_count == 3

    def test_explicit_null_is_absent(self) -> None:
        """The HL7 null "" counts as no value."""
        msg = parse('MSH|^~\\&|A\rPID|1||""~M2')
        assert msg.get("PID-3") is None
        assert msg.get_all("PID-3[*]") == ["M2"]

    def test_z_segments(self) -> None:
        """Z-segments are addressable like any other."""
        msg = sample("adt_a08_update.hl7")
        assert msg.get("ZVN-1") == "SLIDING-FEE-B"
        assert msg.get("ZVN-3") == "Interpreter requested: Swedish"

    def test_compiled_path_is_cached_and_reusable(self) -> None:
        """compile_path returns the same object for the same text and reads any message."""
        path = compile_path("PID-3.1")
        assert compile_path("PID-3.1") is path
        assert path.first(sample("dft_p03_office_visit.hl7")) == "MRN100234"
        assert path.all(sample("adt_a04_register.hl7")) == ["MRN300415"]
        assert sample("dft_p03_credit.hl7").get(path) == "MRN100234"

    @pytest.mark.parametrize("bad", ["", "PID", "PID-", "PID-0", "PID-3.0", "pid-3", "PI-3",
                                     "PID-3[0]", "PID[0]-3", "PID-3..1", "PID-3.1.1.1",
                                     "PID-3[x]", "PID - 3", "PID-3[*]extra"])
    def test_bad_paths(self, bad: str) -> None:
        """A malformed path raises PathSyntaxError naming the path and the expected syntax."""
        with pytest.raises(PathSyntaxError) as info:
            compile_path(bad)
        assert isinstance(info.value, ChargeBridgeError)
        assert "SEG" in str(info.value) or "start at 1" in str(info.value)

    def test_segment_get(self) -> None:
        """Segment.get reads by numbers with repetition, component and subcomponent."""
        msg = sample("dft_p03_office_visit.hl7")
        ft1 = msg.segments("FT1")[0]
        assert ft1.get(19, 1, repetition=2) == "I10"
        assert ft1.get(20, 13) == "NPI"
        assert ft1.get(99) is None
        assert ft1.repetitions(19)[1].startswith("I10^")


class TestGroups:
    def test_ft1_groups_with_fallback(self) -> None:
        """Each FT1 group reads its own FT1 and PR1 only; PID, DG1, IN1 come from the message."""
        msg = sample("dft_p03_office_visit.hl7")
        groups = msg.groups("FT1")
        assert [g.get("FT1-7.1") for g in groups] == ["99213", "93000", "36415"]
        assert [g.get("PR1-3.1") for g in groups] == [None, "93000", None]
        assert [g.get("PID-3.1") for g in groups] == ["MRN100234"] * 3
        assert [g.get("FT1-26[*]") for g in groups] == ["25", None, None]
        assert [g.get_all("DG1[*]-3.1") for g in groups] == [["E11.9", "I10"]] * 3
        assert groups[0].get_all("FT1-19[*]") == ["E11.9", "I10"]
        assert groups[0].get("IN1[2]-4") == "Aetna"
        assert groups[1].anchor.name == "FT1"
        assert [s.name for s in groups[1].segments()] == ["FT1", "PR1"]

    def test_groups_with_their_own_dg1(self) -> None:
        """A DG1 inside an FT1 group shadows the message-level ones for that group only."""
        msg = parse(
            "MSH|^~\\&|A||||||DFT^P03|1|P|2.5.1\rPID|1||M1\r"
            "FT1|1\rPR1|1||P1\rDG1|1||A00.0\r"
            "FT1|2\rPR1|1||P2\rDG1|1||B00.0\rDG1|2||B01.0\r"
        )
        groups = msg.groups("FT1")
        assert [g.get_all("DG1[*]-3") for g in groups] == [["A00.0"], ["B00.0", "B01.0"]]
        assert [g.get("PR1-3") for g in groups] == ["P1", "P2"]
        assert msg.get_all("DG1[*]-3") == ["A00.0", "B00.0", "B01.0"]

    def test_groups_with_members_stop_at_other_segments(self) -> None:
        """With members, message-level segments after the last FT1 stay out of its group."""
        msg = sample("dft_p03_office_visit.hl7")
        groups = msg.groups("FT1", members={"NTE", "PR1", "ROL"})
        assert [s.name for s in groups[2].segments()] == ["FT1"]
        assert groups[2].get_all("DG1[*]-3.1") == ["E11.9", "I10"]

    def test_no_anchor_no_groups(self) -> None:
        """A message without the anchor segment has no groups."""
        assert sample("adt_a04_register.hl7").groups("FT1") == []


class TestSeparatorsAndEncoding:
    @pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
    def test_segment_separators(self, sep: str) -> None:
        """Segments split on \\r, \\n or \\r\\n, with blank lines ignored."""
        raw = (SAMPLES / "dft_p03_office_visit.hl7").read_text().replace("\r", sep) + sep
        msg = parse(raw.encode())
        assert [s.name for s in msg.segments()][:4] == ["MSH", "EVN", "PID", "PV1"]
        assert len(msg.segments("FT1")) == 3
        assert msg.get_all("FT1[*]-26[*]") == ["25"]

    def test_custom_encoding_characters(self) -> None:
        """Delimiters come from MSH-1 and MSH-2, whatever they are."""
        msg = parse("MSH#:*!%#A#B#C#D#2024##DFT:P03#X9#P#2.4\rPID#1##M1:::H%X*M2\r"
                    "NTE#1##a!F!b!S!c!T!d!R!e!E!f")
        assert msg.encoding == Encoding("#", ":", "*", "!", "%")
        assert msg.message_type == "DFT^P03"
        assert msg.get("PID-3") == "M1"
        assert msg.get("PID-3.4.2") == "X"
        assert msg.get("PID-3[2]") == "M2"
        assert msg.get("NTE-3") == "a#b:c%d*e!f"

    def test_leading_whitespace_and_bom(self) -> None:
        """A UTF-8 BOM or blank lines before MSH are tolerated."""
        msg = parse(b"\xef\xbb\xbf\r\n" + MINIMAL.format(version="2.5").encode())
        assert msg.control_id == "CTRL1"


class TestEscapes:
    def test_delimiter_escapes_decoded(self) -> None:
        """\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ decode to the message's delimiters."""
        msg = parse("MSH|^~\\&|A\rNTE|1||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f")
        assert msg.get("NTE-3") == "a|b^c&d~e\\f"

    def test_hex_highlight_and_formatting(self) -> None:
        """\\X..\\ decodes bytes in the message charset; \\H\\ \\N\\ vanish; \\.br\\ is a break."""
        msg = parse("MSH|^~\\&|A\rNTE|1||\\H\\Bold\\N\\ caf\\XC3A9\\\\.br\\next\\X41\\")
        assert msg.get("NTE-3") == "Bold café\nnextA"

    def test_malformed_escapes_kept(self) -> None:
        """Unknown or unterminated escape sequences are kept verbatim."""
        msg = parse("MSH|^~\\&|A\rNTE|1||C:\\temp\\x\rNTE|2||tail\\\rNTE|3||\\XZZ\\")
        assert msg.get("NTE-3") == "C:\\temp\\x"
        assert msg.get("NTE[2]-3") == "tail\\"
        assert msg.get("NTE[3]-3") == "\\XZZ\\"

    def test_escape_round_trip(self) -> None:
        """escape() then reading gives the original text back, for default and custom chars."""
        text = "a|b^c&d~e\\f\r\ng"
        for enc in (Encoding(), Encoding("#", ":", "*", "!", "%")):
            escaped = escape(text, enc)
            for char in (enc.field, enc.component, enc.repetition, enc.subcomponent, "\r", "\n"):
                assert char not in escaped
            assert unescape(escaped, enc) == text
            msg = parse(f"MSH{enc.field}{enc.msh2}{enc.field}A\rNTE{enc.field}{escaped}")
            assert msg.get("NTE-1") == text


class TestCharsets:
    def test_latin1_declared(self) -> None:
        """MSH-18 8859/1 decodes the bytes as Latin-1."""
        raw = "MSH|^~\\&|A|B|C|D|2024||ADT^A08|X|P|2.5||||||8859/1\rPID|1||M1||Müller^Zoë"
        msg = parse(raw.encode("latin-1"))
        assert msg.get("PID-5") == "Müller"
        assert msg.get("PID-5.2") == "Zoë"
        assert msg.codec == "latin-1"

    def test_utf8_declared_and_default(self) -> None:
        """UNICODE UTF-8 and an absent MSH-18 both decode as UTF-8."""
        for charset in ("UNICODE UTF-8", ""):
            raw = f"MSH|^~\\&|A|B|C|D|2024||ADT^A08|X|P|2.5||||||{charset}\rPID|1||M1||Jürgen"
            assert parse(raw.encode("utf-8")).get("PID-5") == "Jürgen"

    def test_undecodable_utf8_is_read_error(self) -> None:
        """Latin-1 bytes in a message declared UTF-8 raise HL7ReadError naming MSH-18."""
        raw = "MSH|^~\\&|A|B|C|D|2024||ADT^A08|X|P|2.5||||||UNICODE UTF-8\rPID|1||M1||Müller"
        with pytest.raises(HL7ReadError) as info:
            parse(raw.encode("latin-1"))
        assert info.value.where == "MSH-18"

    def test_non_ascii_in_ascii_message_is_read_error(self) -> None:
        """A byte over 0x7F in a message declared ASCII raises HL7ReadError."""
        raw = "MSH|^~\\&|A|B|C|D|2024||ADT^A08|X|P|2.5||||||ASCII\rPID|1||M1||Müller"
        with pytest.raises(HL7ReadError):
            parse(raw.encode("latin-1"))

    def test_unknown_charset_is_read_error(self) -> None:
        """An MSH-18 no codec knows raises HL7ReadError."""
        with pytest.raises(HL7ReadError):
            parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|X|P|2.5||||||KLINGON-7\rPID|1")

    def test_charset_argument_overrides(self) -> None:
        """An explicit charset (channel setting) wins over MSH-18."""
        raw = "MSH|^~\\&|A|B|C|D|2024||ADT^A08|X|P|2.5||||||UNICODE UTF-8\rPID|1||M1||Müller"
        assert parse(raw.encode("latin-1"), charset="8859/1").get("PID-5") == "Müller"


class TestNotHl7:
    @pytest.mark.parametrize("data", [
        b"",
        b"   \r\n",
        b'{"resourceType": "Bundle"}',
        b"\x00\x01\x02\xff\xfe",
        b"PID|1||M1\rMSH|^~\\&|A",
        b"MSH",
        b"MSH|",
        b"MSHA^~\\&|X",
        b"MSH|^^\\&|dup delimiters",
        b"MSH|^~\\&|A\r{not a segment}",
        b"MSH|^~\\&|A\rpid|1",
        b"MSH|^~\\&|A\rPIDX|1",
        "MSH|^~\\&|A".encode("utf-16"),
        b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|X|P|2.5||||||hex\rPID|1",
        b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|X|P|2.5||||||UTF\x008\rPID|1",
    ])
    def test_rejected(self, data: bytes) -> None:
        """Input that is not an HL7 v2 message raises HL7ReadError and nothing else."""
        with pytest.raises(HL7ReadError):
            parse(data)

    def test_wrong_type(self) -> None:
        """Something other than bytes or text raises HL7ReadError."""
        with pytest.raises(HL7ReadError):
            parse(12345)  # type: ignore[arg-type]


class TestSamples:
    @pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.hl7")))
    def test_sample_parses(self, name: str) -> None:
        """Every shipped sample parses with an MSH-10 and a v2.5.1 header."""
        msg = sample(name)
        assert msg.control_id
        assert msg.version == "2.5.1"
        assert msg.raw.endswith("\r") or msg.raw.count("\r") >= 3

    def test_sample_npis_pass_luhn(self) -> None:
        """Every NPI in the samples passes the Luhn check with the 80840 prefix."""

        def valid(npi: str) -> bool:
            digits = [int(c) for c in "80840" + npi]
            total = 0
            for i, digit in enumerate(reversed(digits)):
                if i % 2 == 1:
                    digit *= 2
                    digit -= 9 if digit > 9 else 0
                total += digit
            return total % 10 == 0

        npis = set()
        for path in SAMPLES.glob("*.hl7"):
            msg = parse(path.read_bytes())
            npis.update(msg.get_all("FT1[*]-20.1") + msg.get_all("PV1[*]-7.1"))
        assert npis and all(len(n) == 10 and valid(n) for n in npis)
        assert not valid("1234567890")
