"""Tests for engine.hl7.mllp over real sockets: framing, limits, caps, timeouts, the client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from engine.hl7.mllp import MllpError, frame, send_messages, split_file_messages
from engine.hl7.reader import parse
from tests.hl7.conftest import Recorder, ServerFactory, sample_bytes

WAIT = 30.0  # generous upper bound for anything we poll for on a noisy CI machine


async def eventually(check: Callable[[], bool]) -> None:
    """Poll `check` until true, failing after WAIT seconds."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    """Read `count` MLLP replies and return their payloads."""
    out = []
    for _ in range(count):
        block = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), WAIT)
        assert block[:1] == b"\x0b"
        out.append(block[1:-2])
    return out


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True when the server closes the connection (EOF or reset) within WAIT seconds."""
    try:
        data = await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        return True
    return data == b""


def message(control_id: str) -> bytes:
    """A small valid DFT with the given MSH-10."""
    return (f"MSH|^~\\&|EHR|FAC|CB|BILL|20240101||DFT^P03|{control_id}|P|2.5.1\r"
            f"PID|1||M{control_id}\rFT1|1|||20240101||CG|99213\r").encode()


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry.get("event") == name]


class TestFraming:
    async def test_round_trip_and_peer(self, mllp_server: ServerFactory) -> None:
        """A framed message reaches the handler unframed, with the peer, and the ACK comes back."""
        recorder = Recorder()
        server = await mllp_server(recorder)
        data = sample_bytes("dft_p03_office_visit.hl7")
        [reply] = await send_messages("127.0.0.1", server.port, [data])
        assert recorder.payloads == [data]
        assert recorder.peers[0].startswith("127.0.0.1:")
        ack = parse(reply)
        assert ack.get("MSA-1") == "AA"
        assert ack.get("MSA-2") == "NC20240315-0001"

    async def test_pipelined_frames_in_order(self, mllp_server: ServerFactory) -> None:
        """Many frames written at once are handled and answered in order."""
        seen: list[str] = []

        async def slow_then_fast(payload: bytes, peer: str) -> bytes:
            control_id = parse(payload).control_id or ""
            # Earlier messages take longer: order must still hold.
            await asyncio.sleep(0.002 if int(control_id) < 5 else 0)
            seen.append(control_id)
            return control_id.encode()

        server = await mllp_server(slow_then_fast)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        ids = [str(i) for i in range(200)]
        writer.write(b"".join(frame(message(i)) for i in ids))
        replies = await read_frames(reader, len(ids))
        writer.close()
        assert [r.decode() for r in replies] == ids
        assert seen == ids

    async def test_frames_split_across_writes(self, mllp_server: ServerFactory) -> None:
        """A frame delivered a few bytes at a time, end block split, is reassembled."""
        recorder = Recorder()
        server = await mllp_server(recorder)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        data = frame(message("77")) + frame(message("78"))
        for i in range(0, len(data), 7):
            writer.write(data[i:i + 7])
            await writer.drain()
            await asyncio.sleep(0)
        replies = await read_frames(reader, 2)
        writer.close()
        assert [parse(r).get("MSA-2") for r in replies] == ["77", "78"]
        assert recorder.payloads == [message("77"), message("78")]

    async def test_empty_frame_reaches_handler(self, mllp_server: ServerFactory) -> None:
        """An empty frame is handed to the handler as b'' and its NACK is sent."""
        recorder = Recorder()
        server = await mllp_server(recorder)
        [reply] = await send_messages("127.0.0.1", server.port, [b""])
        assert recorder.payloads == [b""]
        assert parse(reply).get("MSA-1") == "AE"

    async def test_bytes_before_start_block_discarded(self, mllp_server: ServerFactory) -> None:
        """Junk before a start block is dropped and logged; the frame after it is handled."""
        recorder = Recorder()
        server = await mllp_server(recorder)
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n" + frame(message("5")))
            [reply] = await read_frames(reader, 1)
            writer.close()
        assert recorder.payloads == [message("5")]
        assert parse(reply).get("MSA-2") == "5"
        discarded = events(logs, "mllp.bytes_discarded")
        assert discarded and discarded[0]["size"] == 18

    async def test_handler_returning_none_sends_nothing(self, mllp_server: ServerFactory) -> None:
        """When the handler returns None no reply is written, and later frames still work."""

        async def maybe(payload: bytes, peer: str) -> bytes | None:
            return None if payload == b"quiet" else b"ok"

        server = await mllp_server(maybe)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frame(b"quiet") + frame(b"loud"))
        assert await read_frames(reader, 1) == [b"ok"]
        writer.close()

    async def test_handler_failure_closes_without_reply(self, mllp_server: ServerFactory) -> None:
        """A handler that raises gets the connection closed with no ACK, and it is logged."""

        async def broken(payload: bytes, peer: str) -> bytes:
            raise RuntimeError("boom")

        server = await mllp_server(broken)
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(frame(message("1")))
            assert await closed_by_server(reader)
            writer.close()
        assert events(logs, "mllp.handler_failed")


class TestLimits:
    async def test_oversize_frame_closes_connection(self, mllp_server: ServerFactory) -> None:
        """A complete frame over the limit closes the connection unhandled and is logged."""
        recorder = Recorder()
        server = await mllp_server(recorder, max_frame_bytes=1000)
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(frame(b"MSH|^~\\&|" + b"x" * 2000))
            assert await closed_by_server(reader)
            writer.close()
        assert recorder.payloads == []
        [entry] = events(logs, "mllp.frame_too_large")
        assert entry["limit"] == 1000
        assert "x" * 10 not in repr(entry)

    async def test_oversize_stream_without_end_closes(self, mllp_server: ServerFactory) -> None:
        """An unfinished frame growing past the limit closes the connection before its end."""
        recorder = Recorder()
        server = await mllp_server(recorder, max_frame_bytes=1000)
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"\x0b" + b"y" * 5000)
            assert await closed_by_server(reader)
            writer.close()
        assert recorder.payloads == []
        assert events(logs, "mllp.frame_too_large")

    async def test_frame_at_limit_is_handled(self, mllp_server: ServerFactory) -> None:
        """A frame of exactly the limit is handled."""
        recorder = Recorder()
        server = await mllp_server(recorder, max_frame_bytes=1000)
        payload = message("9")
        payload += b"Z" * (1000 - len(payload))
        [reply] = await send_messages("127.0.0.1", server.port, [payload])
        assert recorder.payloads == [payload]
        assert reply

    async def test_five_mib_under_ten_mib_limit(self, mllp_server: ServerFactory) -> None:
        """A 5 MiB message under a 10 MiB limit is handled; an 11 MiB one closes the connection."""
        recorder = Recorder()
        server = await mllp_server(recorder, max_frame_bytes=10 << 20)
        note = b"NTE|1||" + b"A" * 80 + b"\r"
        big = message("42") + note * ((5 << 20) // len(note))
        [reply] = await send_messages("127.0.0.1", server.port, [big])
        assert parse(reply).get("MSA-2") == "42"
        assert recorder.payloads == [big]
        huge = message("43") + note * ((11 << 20) // len(note))
        with pytest.raises(MllpError):
            await send_messages("127.0.0.1", server.port, [huge])
        assert len(recorder.payloads) == 1

    async def test_dropped_mid_frame(self, mllp_server: ServerFactory) -> None:
        """A connection dropped mid-frame handles nothing and is logged."""
        recorder = Recorder()
        server = await mllp_server(recorder)
        with capture_logs() as logs:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"\x0b" + message("3")[:40])
            await writer.drain()
            writer.close()
            await eventually(lambda: bool(events(logs, "mllp.dropped_mid_frame")))
        assert recorder.payloads == []
        assert events(logs, "mllp.dropped_mid_frame")[0]["size"] == 41

    async def test_connection_cap(self, mllp_server: ServerFactory) -> None:
        """Past max_connections a new connection is closed at once; freed slots are reused."""
        server = await mllp_server(Recorder(), max_connections=2)
        held = []
        for i in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(frame(message(str(i))))
            await read_frames(reader, 1)
            held.append(writer)
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert await closed_by_server(reader)
            writer.close()
        assert events(logs, "mllp.connection_refused")
        held[0].close()
        await eventually(lambda: server.connection_count < 2)
        [reply] = await send_messages("127.0.0.1", server.port, [message("9")])
        assert parse(reply).get("MSA-2") == "9"
        held[1].close()

    async def test_idle_timeout(self, mllp_server: ServerFactory) -> None:
        """A connection with no traffic for the idle timeout is closed by the server."""
        server = await mllp_server(Recorder(), idle_timeout_seconds=0.2)
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(frame(message("1")))
            await read_frames(reader, 1)
            assert await closed_by_server(reader)
            writer.close()
        assert events(logs, "mllp.idle_timeout")

    async def test_trickling_sender_does_not_hold_up_others(
        self, mllp_server: ServerFactory
    ) -> None:
        """While one sender trickles a frame byte by byte, another gets all its ACKs."""
        recorder = Recorder()
        server = await mllp_server(recorder)
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", server.port)
        data = frame(message("slow"))
        slow_writer.write(data[:10])
        await slow_writer.drain()
        replies = await send_messages("127.0.0.1", server.port,
                                      [message(str(i)) for i in range(50)])
        assert len(replies) == 50
        slow_writer.write(data[10:])
        [reply] = await read_frames(slow_reader, 1)
        assert parse(reply).get("MSA-2") == "slow"
        slow_writer.close()

    async def test_many_connections_at_once(self, mllp_server: ServerFactory) -> None:
        """200 connections each sending 50 messages concurrently all get their ACKs."""
        recorder = Recorder()
        server = await mllp_server(recorder)

        async def one(conn: int) -> list[bytes]:
            batch = [message(f"{conn}-{i}") for i in range(50)]
            return await send_messages("127.0.0.1", server.port, batch)

        results = await asyncio.gather(*(one(c) for c in range(200)))
        assert all(len(r) == 50 for r in results)
        assert parse(results[123][7]).get("MSA-2") == "123-7"
        assert len(recorder.payloads) == 10000


class TestStop:
    async def test_stop_drains_in_flight_handler(self, mllp_server: ServerFactory) -> None:
        """stop() stops accepting, lets a running handler finish and deliver its reply."""
        release = asyncio.Event()
        entered = asyncio.Event()

        async def gated(payload: bytes, peer: str) -> bytes:
            entered.set()
            await release.wait()
            return b"done"

        server = await mllp_server(gated)
        port = server.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(b"x"))
        await asyncio.wait_for(entered.wait(), WAIT)
        stopping = asyncio.create_task(server.stop(drain_timeout=WAIT))
        await asyncio.sleep(0.05)
        assert not stopping.done()
        release.set()
        assert await read_frames(reader, 1) == [b"done"]
        await asyncio.wait_for(stopping, WAIT)
        with pytest.raises(MllpError):
            await send_messages("127.0.0.1", port, [b"x"], timeout=5)
        writer.close()


class TestClient:
    async def test_connection_refused(self) -> None:
        """Sending to a port nobody listens on raises MllpError."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            with pytest.raises(MllpError):
                await send_messages("127.0.0.1", port, [b"x"], timeout=5)

    async def test_reply_timeout(self, mllp_server: ServerFactory) -> None:
        """No reply within the timeout raises MllpError naming the message."""

        async def silent(payload: bytes, peer: str) -> None:
            return None

        server = await mllp_server(silent)
        with pytest.raises(MllpError, match="message 1"):
            await send_messages("127.0.0.1", server.port, [b"x"], timeout=0.3)


class TestSplitFileMessages:
    def test_bare_multi_msh_file(self) -> None:
        """A file of several messages splits at each MSH, with \\n turned into \\r."""
        data = sample_bytes("dft_p03_office_visit.hl7") + b"\n" + sample_bytes(
            "adt_a04_register.hl7").replace(b"\r", b"\r\n")
        messages = split_file_messages(data)
        assert len(messages) == 2
        assert parse(messages[0]).control_id == "NC20240315-0001"
        assert parse(messages[1]).control_id == "NC20240322-0101"
        assert b"\n" not in messages[1] and messages[1].endswith(b"\r")

    def test_batch_wrappers_stripped(self) -> None:
        """FHS/BHS/BTS/FTS lines are dropped and the messages inside are returned."""
        data = (b"FHS|^~\\&|EHR\rBHS|^~\\&|EHR\r" + message("1") + message("2")
                + b"BTS|2\rFTS|1\r")
        assert split_file_messages(data) == [message("1"), message("2")]

    def test_nothing_to_split(self) -> None:
        """A file without MSH gives no messages."""
        assert split_file_messages(b"\r\n\r\nhello\n") == []
