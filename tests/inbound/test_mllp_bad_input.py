"""Bad input on an MLLP channel of a real engine: each gets its answer, and the store keeps
what the issue says (raw bytes with status ERROR, or nothing when no frame completed)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from engine.hl7.mllp import END_BLOCK, START_BLOCK, frame, send_messages
from tests.inbound.conftest import StartNode, channel, count, dft, err, mllp_port, msa, wait_until


async def _exchange(port: int, data: bytes, timeout: float = 30.0) -> bytes | None:
    """Write raw bytes on a new connection; the first framed reply, or None if it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        try:
            block = await asyncio.wait_for(reader.readuntil(END_BLOCK), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return block[block.index(START_BLOCK) + 1:-len(END_BLOCK)]
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class TestMalformedFrames:
    async def test_empty_frame_is_answered_ae_and_kept_as_error(self, start_node: StartNode
                                                                ) -> None:
        """An empty frame gets AE with an ERR segment; an ERROR message with empty raw is kept."""
        node = await start_node([channel()])
        reply = await _exchange(mllp_port(node), frame(b""))
        assert reply is not None and msa(reply)[1] == "AE"
        assert err(reply)
        [stored] = node.store.search_messages(status="ERROR")
        assert stored.raw == b"" and "empty" in (stored.reason or "")

    async def test_bytes_before_start_block_are_discarded(self, start_node: StartNode) -> None:
        """Garbage before the start block is dropped; the framed message after it is AA."""
        node = await start_node([channel()])
        reply = await _exchange(mllp_port(node), b"garbage\r\n" + frame(dft(1)))
        assert reply is not None and msa(reply)[1:3] == ["AA", "C1"]
        [stored] = node.store.search_messages()
        assert stored.status == "RECEIVED" and stored.raw == dft(1)

    async def test_frame_never_closed_stores_nothing(self, start_node: StartNode) -> None:
        """A connection dropped mid-frame gets no answer and leaves nothing in the store, and
        the listener keeps serving."""
        node = await start_node([channel()])
        port = mllp_port(node)
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(START_BLOCK + dft(2)[:40])
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        [reply] = await send_messages("127.0.0.1", port, [dft(3)])
        assert msa(reply)[1:3] == ["AA", "C3"]
        assert [m.control_id for m in node.store.search_messages()] == ["C3"]

    async def test_json_instead_of_hl7_is_ae_and_kept(self, start_node: StartNode) -> None:
        """A JSON document is answered AE with ERR and kept raw with status ERROR."""
        node = await start_node([channel()])
        body = json.dumps({"resourceType": "ChargeItem", "id": "x"}).encode()
        [reply] = await send_messages("127.0.0.1", mllp_port(node), [body])
        assert msa(reply)[1] == "AE" and "MSH" in err(reply)
        [stored] = node.store.search_messages(status="ERROR")
        assert stored.raw == body

    async def test_binary_instead_of_hl7_is_ae_and_kept(self, start_node: StartNode) -> None:
        """Random binary bytes are answered AE and kept raw with status ERROR."""
        node = await start_node([channel()])
        body = bytes(range(256)).replace(b"\x0b", b"").replace(b"\x1c", b"")
        [reply] = await send_messages("127.0.0.1", mllp_port(node), [body])
        assert msa(reply)[1] == "AE"
        [stored] = node.store.search_messages(status="ERROR")
        assert stored.raw == body


class TestHeaderProblems:
    async def test_missing_msh9_is_ae_naming_msh9(self, start_node: StartNode) -> None:
        """An MSH without MSH-9 is AE whose ERR points at MSH-9; kept as ERROR."""
        node = await start_node([channel()])
        [reply] = await send_messages("127.0.0.1", mllp_port(node),
                                      [dft(4).replace(b"DFT^P03", b"")])
        assert msa(reply)[1] == "AE" and "MSH^1^9" in err(reply)
        [stored] = node.store.search_messages(status="ERROR")
        assert "MSH-9" in (stored.reason or "")

    async def test_missing_msh10_is_ae_naming_msh10(self, start_node: StartNode) -> None:
        """An MSH without MSH-10 is AE whose ERR points at MSH-10; kept as ERROR."""
        node = await start_node([channel()])
        [reply] = await send_messages("127.0.0.1", mllp_port(node),
                                      [dft(5).replace(b"|C5|", b"||")])
        assert msa(reply)[1] == "AE" and "MSH^1^10" in err(reply)
        [stored] = node.store.search_messages(status="ERROR")
        assert "MSH-10" in (stored.reason or "")

    async def test_unaccepted_type_is_ar_and_kept(self, start_node: StartNode) -> None:
        """A message type the channel does not accept is AR (code 200) and kept as ERROR."""
        node = await start_node([channel(accept=["DFT^P03"])])
        raw = dft(6).replace(b"DFT^P03", b"ORU^R01")
        [reply] = await send_messages("127.0.0.1", mllp_port(node), [raw])
        assert msa(reply)[1] == "AR" and "200" in err(reply)
        [stored] = node.store.search_messages(status="ERROR")
        assert stored.message_type == "ORU^R01" and stored.raw == raw


def _big_dft(i: int, size: int) -> bytes:
    """A DFT padded with NTE segments to about `size` bytes."""
    base = dft(i)
    note = b"NTE|1||" + b"x" * 1000 + b"\r"
    return base + note * ((size - len(base)) // len(note) + 1)


class TestSizes:
    async def test_5mib_message_under_10mib_limit_is_accepted_whole(self, start_node: StartNode
                                                                     ) -> None:
        """A 5 MiB message on a channel with a 10 MiB frame limit is AA and stored byte for
        byte."""
        source = {"type": "mllp", "host": "127.0.0.1", "port": 0, "max_frame_bytes": 10 << 20}
        node = await start_node([channel(source=source)])
        raw = _big_dft(7, 5 << 20)
        [reply] = await send_messages("127.0.0.1", mllp_port(node), [raw])
        assert msa(reply)[1] == "AA"
        [stored] = node.store.search_messages()
        assert stored.raw == raw

    async def test_message_over_limit_closes_connection_and_stores_nothing(
            self, start_node: StartNode) -> None:
        """An 11 MiB frame on a 10 MiB channel gets no ACK (the connection closes, so the
        sender knows it was not accepted) and nothing is stored."""
        source = {"type": "mllp", "host": "127.0.0.1", "port": 0, "max_frame_bytes": 10 << 20}
        node = await start_node([channel(source=source)])
        reply = await _exchange(mllp_port(node), frame(_big_dft(8, 11 << 20)))
        assert reply is None
        assert count(node.store) == 0


class TestSlowAndMany:
    async def test_trickling_sender_does_not_hold_up_others(self, start_node: StartNode
                                                            ) -> None:
        """While one sender trickles a frame one byte a second, other senders' messages are
        all acknowledged; the trickled message is acknowledged once complete."""
        node = await start_node([channel()])
        port = mllp_port(node)
        slow = frame(dft(9))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def trickle() -> bytes:
            for byte in slow[:3]:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1.0)
            return b""

        trickling = asyncio.create_task(trickle())
        others = await asyncio.gather(*(
            send_messages("127.0.0.1", port, [dft(1000 + 10 * c + k) for k in range(10)])
            for c in range(5)))
        assert not trickling.done(), "the others finished only after the trickler"
        assert all(msa(r)[1] == "AA" for replies in others for r in replies)
        await trickling
        writer.write(slow[3:])
        block = await asyncio.wait_for(reader.readuntil(END_BLOCK), 30)
        writer.close()
        assert msa(block[1:-2])[1:3] == ["AA", "C9"]
        assert count(node.store) == 51

    @pytest.mark.timeout(600)
    async def test_200_connections_50_messages_each(self, start_node: StartNode) -> None:
        """200 senders at once, 50 messages each: every message AA, each stored exactly once."""
        node = await start_node([channel()])
        port = mllp_port(node)
        batches = [[dft(100_000 + c * 50 + k) for k in range(50)] for c in range(200)]
        results = await asyncio.gather(*(send_messages("127.0.0.1", port, b, timeout=60)
                                         for b in batches))
        codes = [msa(r)[1] for replies in results for r in replies]
        assert len(codes) == 10_000 and set(codes) == {"AA"}
        echoed = [msa(r)[2] for replies in results for r in replies]
        assert echoed == [f"C{100_000 + n}" for n in range(10_000)]
        await wait_until(lambda: count(node.store, status="RECEIVED") == 10_000,
                         what="10,000 stored messages")
