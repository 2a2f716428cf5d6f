"""Fuzz tests: random bytes and mutated samples never make the reader raise anything but
HL7ReadError, and reading whatever parses (paths, groups, ACKs) never fails or hangs."""

from __future__ import annotations

from pathlib import Path as FilePath

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import HL7ReadError
from engine.hl7.ack import AckError, build_ack
from engine.hl7.path import PathSyntaxError, compile_path
from engine.hl7.reader import Message, parse

SAMPLES = [p.read_bytes() for p in
           sorted((FilePath(__file__).resolve().parents[2] / "samples" / "hl7").glob("*.hl7"))]

PATHS = [compile_path(p) for p in (
    "MSH-1", "MSH-2", "MSH-9.2", "MSH-10", "MSH-18", "PID-3", "PID-3[*].4.2", "PID-5.2",
    "PID-11[2].3", "PV1-7.1", "PV1-19", "IN1[2]-3.1", "IN1[*]-36", "DG1[*]-3.1",
    "FT1-4.1", "FT1[*]-7.1", "FT1[*]-11.1.2", "FT1-19[*]", "FT1-26[3]", "ZVN-1", "NTE[9]-3",
)]

FUZZ = settings(max_examples=300, deadline=2000,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def read_everything(msg: Message) -> None:
    """Touch every reading API on a parsed message; none of it may raise."""
    for attr in ("control_id", "message_type", "trigger", "version", "sending_application",
                 "sending_facility", "receiving_application", "receiving_facility"):
        value = getattr(msg, attr)
        assert value is None or isinstance(value, str)
    for path in PATHS:
        first = path.first(msg)
        values = path.all(msg)
        assert all(isinstance(v, str) and v for v in values)
        assert first == (values[0] if values else None)
    for seg in msg.segments():
        for number in (1, 2, 3, 9, 40):
            seg.get(number, 2, 2, 2)
            seg.repetitions(number)
    for anchor in ("FT1", "IN1", "PID"):
        for scope in msg.groups(anchor):
            for path in PATHS:
                scope.get(path)
                scope.get_all(path)
    ack = build_ack(msg, "AE", text="fuzz", error=AckError("FT1", 1, 4, 102, "x|^~\\&"))
    parse(ack)


def try_parse(data: bytes | str) -> None:
    try:
        msg = parse(data)
    except HL7ReadError:
        if isinstance(data, bytes):
            parse(build_ack(None, "AE", raw=data))
        return
    read_everything(msg)


@st.composite
def mutated_sample(draw: st.DrawFn) -> bytes:
    """A shipped sample with a few bytes inserted, deleted or replaced."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    interesting = st.sampled_from([*b"|^~\\&\r\n#\x00\xff\xc3\x0b\x1cXZ\"", 0x80, 0x7F])
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        byte = draw(st.one_of(interesting, st.integers(0, 255)))
        if action == "insert":
            data.insert(position, byte)
        elif action == "delete" and position < len(data):
            del data[position]
        elif action == "replace" and position < len(data):
            data[position] = byte
        elif action == "truncate":
            del data[position:]
    return bytes(data)


hl7ish_text = st.text(alphabet="MSHPIDFT1Z0|^~\\&#:!%*\r\nXEF.br\"ab 9", max_size=300)


class TestReaderFuzz:
    @FUZZ
    @given(st.binary(max_size=2000))
    def test_random_bytes(self, data: bytes) -> None:
        """Random bytes either parse or raise HL7ReadError."""
        try_parse(data)

    @FUZZ
    @given(st.binary(max_size=500))
    def test_random_bytes_after_msh(self, tail: bytes) -> None:
        """Random bytes behind a valid MSH prefix either parse or raise HL7ReadError."""
        try_parse(b"MSH|^~\\&|" + tail)

    @FUZZ
    @given(mutated_sample())
    def test_mutated_samples(self, data: bytes) -> None:
        """Samples with bytes inserted, deleted, replaced or cut either parse or raise
        HL7ReadError, and whatever parses reads without error."""
        try_parse(data)

    @FUZZ
    @given(hl7ish_text)
    def test_delimiter_heavy_text(self, text: str) -> None:
        """Text made of segment names, delimiters and escape fragments never breaks the reader."""
        try_parse("MSH" + text)
        try_parse(text)

    @FUZZ
    @given(st.text(max_size=40))
    def test_random_paths(self, text: str) -> None:
        """Any path text either compiles or raises PathSyntaxError."""
        try:
            path = compile_path(text)
        except PathSyntaxError:
            return
        msg = parse(SAMPLES[0])
        path.first(msg)
        path.all(msg)
