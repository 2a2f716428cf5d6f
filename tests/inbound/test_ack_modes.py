"""ACK modes over MLLP on a real engine: original AA/AE/AR, enhanced CA/CE/CR honouring
MSH-15 (AL, NE, ER, SU), duplicate resends, and HL7 versions 2.3 to 2.8."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from engine.hl7.mllp import END_BLOCK, frame, send_messages
from tests.inbound.conftest import StartNode, channel, count, dft, err, mllp_port, msa


async def _replies(port: int, messages: list[bytes], expected: int) -> list[bytes]:
    """Send all messages on one connection, then read `expected` replies (some messages are
    answered with nothing, so replies are matched by MSA-2, not by position)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(frame(m) for m in messages))
        await writer.drain()
        out = []
        for _ in range(expected):
            block = await asyncio.wait_for(reader.readuntil(END_BLOCK), 30)
            out.append(block[1:-2])
        return out
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _bad(i: int, **kw: str) -> bytes:
    """A DFT whose type this channel refuses (AR / CR)."""
    return dft(i, **kw).replace(b"DFT^P03", b"ORU^R01")


class TestAckModes:
    async def test_original_mode_codes(self, start_node: StartNode) -> None:
        """Without MSH-15: AA for a good message, AE for an unreadable one, AR for a refused
        type."""
        node = await start_node([channel()])
        replies = await send_messages("127.0.0.1", mllp_port(node),
                                      [dft(1), dft(2).replace(b"|C2|", b"||"), _bad(3)])
        assert [msa(r)[1] for r in replies] == ["AA", "AE", "AR"]

    async def test_enhanced_al_always_answers_commit_codes(self, start_node: StartNode) -> None:
        """MSH-15 AL: CA for a good message, CE / CR with ERR for bad ones."""
        node = await start_node([channel()])
        replies = await send_messages("127.0.0.1", mllp_port(node), [
            dft(1, msh15="AL"), dft(2, msh15="AL").replace(b"|C2|", b"||"),
            _bad(3, msh15="AL")])
        assert [msa(r)[1] for r in replies] == ["CA", "CE", "CR"]
        assert "MSH^1^10" in err(replies[1])

    async def test_enhanced_ne_never_answers(self, start_node: StartNode) -> None:
        """MSH-15 NE: no ACK at all, good or bad; the message is journaled all the same."""
        node = await start_node([channel()])
        replies = await _replies(mllp_port(node), [dft(1, msh15="NE"), _bad(2, msh15="NE"),
                                                   dft(3, msh15="AL")], 1)
        assert [msa(r)[1:3] for r in replies] == [["CA", "C3"]]
        assert count(node.store) == 3

    async def test_enhanced_er_answers_errors_only(self, start_node: StartNode) -> None:
        """MSH-15 ER: silence for success, CR for a refused message."""
        node = await start_node([channel()])
        replies = await _replies(mllp_port(node), [dft(1, msh15="ER"), _bad(2, msh15="ER")], 1)
        assert [msa(r)[1:3] for r in replies] == [["CR", "C2"]]

    async def test_enhanced_su_answers_success_only(self, start_node: StartNode) -> None:
        """MSH-15 SU: CA for success, silence for a refused message."""
        node = await start_node([channel()])
        replies = await _replies(mllp_port(node), [_bad(1, msh15="SU"), dft(2, msh15="SU")], 1)
        assert [msa(r)[1:3] for r in replies] == [["CA", "C2"]]
        assert count(node.store, status="ERROR") == 1


class TestDuplicates:
    async def test_resent_control_id_is_aa_again_and_stored_once(self, start_node: StartNode
                                                                 ) -> None:
        """The same sender resending MSH-10 gets AA again and the store keeps one message."""
        node = await start_node([channel()])
        port = mllp_port(node)
        [first] = await send_messages("127.0.0.1", port, [dft(7)])
        [again] = await send_messages("127.0.0.1", port, [dft(7)])
        assert msa(first)[1:3] == msa(again)[1:3] == ["AA", "C7"]
        assert "duplicate" in msa(again)[3]
        assert count(node.store) == 1

    async def test_same_control_id_from_another_sender_is_not_a_duplicate(
            self, start_node: StartNode) -> None:
        """MSH-10 is unique per sender: another sending application's C7 is a new message."""
        node = await start_node([channel()])
        await send_messages("127.0.0.1", mllp_port(node), [dft(7), dft(7, sender="OTHEREHR")])
        assert count(node.store) == 2


class TestVersions:
    @pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7",
                                         "2.7.1", "2.8"])
    async def test_each_version_is_accepted_and_echoed(self, start_node: StartNode,
                                                       version: str) -> None:
        """A DFT in each HL7 version from 2.3 to 2.8 is AA, and the ACK keeps its version."""
        node = await start_node([channel()])
        [reply] = await send_messages("127.0.0.1", mllp_port(node), [dft(1, version=version)])
        assert msa(reply)[1] == "AA"
        assert reply.split(b"\r")[0].split(b"|")[11] == version.encode()

    @pytest.mark.parametrize(("version", "where"), [("2.3", "ERR|MSH^1^10^"),
                                                    ("2.8", "ERR||MSH^1^10")])
    async def test_error_segment_follows_the_version(self, start_node: StartNode, version: str,
                                                     where: str) -> None:
        """Before 2.5 the location is in ERR-1; from 2.5 on in ERR-2."""
        node = await start_node([channel()])
        raw = dft(1, version=version).replace(b"|C1|", b"||")
        [reply] = await send_messages("127.0.0.1", mllp_port(node), [raw])
        assert err(reply).startswith(where)
