"""Tests for MLLP over TLS and mutual TLS, and python-hl7's own clients as independent senders."""

from __future__ import annotations

import asyncio
from typing import Any

import hl7
import hl7.client
import hl7.mllp
import pytest
from structlog.testing import capture_logs

from engine.hl7.mllp import MllpError, frame, send_messages
from engine.hl7.reader import parse
from engine.hl7.tls import TlsConfigError, client_ssl_context, server_ssl_context
from tests.hl7.conftest import Recorder, ServerFactory, TlsFiles, sample_bytes

WAIT = 30.0


def loop_errors() -> list[dict[str, Any]]:
    """Record what reaches the event loop's exception handler (tracebacks we must not cause)."""
    seen: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: seen.append(context))
    return seen


class TestTls:
    async def test_tls_round_trip(self, mllp_server: ServerFactory, tls_files: TlsFiles) -> None:
        """A client trusting the CA exchanges messages with a TLS server."""
        recorder = Recorder()
        context = server_ssl_context(tls_files.server_cert, tls_files.server_key)
        server = await mllp_server(recorder, ssl_context=context)
        data = sample_bytes("dft_p03_office_visit.hl7")
        replies = await send_messages("127.0.0.1", server.port, [data, data],
                                      ssl_context=client_ssl_context(tls_files.ca))
        assert [parse(r).get("MSA-2") for r in replies] == ["NC20240315-0001"] * 2
        assert recorder.payloads == [data, data]

    async def test_untrusted_server_refused(self, mllp_server: ServerFactory,
                                            tls_files: TlsFiles) -> None:
        """A client trusting another CA refuses the server certificate."""
        recorder = Recorder()
        context = server_ssl_context(tls_files.server_cert, tls_files.server_key)
        server = await mllp_server(recorder, ssl_context=context)
        with pytest.raises(MllpError):
            await send_messages("127.0.0.1", server.port, [b"x"],
                                ssl_context=client_ssl_context(tls_files.other_ca), timeout=10)
        assert recorder.payloads == []

    async def test_mutual_tls(self, mllp_server: ServerFactory, tls_files: TlsFiles) -> None:
        """With client certificates required, a client with one gets through, one without not."""
        recorder = Recorder()
        context = server_ssl_context(tls_files.server_cert, tls_files.server_key,
                                     ca=tls_files.ca, require_client_cert=True)
        server = await mllp_server(recorder, ssl_context=context)
        with_cert = client_ssl_context(tls_files.ca, tls_files.client_cert, tls_files.client_key)
        [reply] = await send_messages("127.0.0.1", server.port,
                                      [sample_bytes("adt_a04_register.hl7")],
                                      ssl_context=with_cert)
        assert parse(reply).get("MSA-1") == "AA"
        with capture_logs() as logs, pytest.raises(MllpError):
            await send_messages("127.0.0.1", server.port,
                                [sample_bytes("adt_a04_register.hl7")],
                                ssl_context=client_ssl_context(tls_files.ca), timeout=10)
        assert len(recorder.payloads) == 1
        assert any(e["event"] == "mllp.tls_handshake_failed" for e in logs)

    async def test_plaintext_client_on_tls_port(self, mllp_server: ServerFactory,
                                                tls_files: TlsFiles) -> None:
        """A plaintext MLLP client on a TLS port is closed cleanly and logged, no traceback."""
        errors = loop_errors()
        recorder = Recorder()
        context = server_ssl_context(tls_files.server_cert, tls_files.server_key)
        server = await mllp_server(recorder, ssl_context=context)
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(frame(sample_bytes("adt_a04_register.hl7")))
            try:
                data = await asyncio.wait_for(reader.read(), WAIT)
            except ConnectionResetError:
                data = b""
            writer.close()
        assert b"MSA" not in data
        assert recorder.payloads == []
        failed = [e for e in logs if e["event"] == "mllp.tls_handshake_failed"]
        assert failed and failed[0]["peer"].startswith("127.0.0.1:")
        assert errors == []
        # The server still serves TLS clients afterwards.
        [reply] = await send_messages("127.0.0.1", server.port,
                                      [sample_bytes("adt_a04_register.hl7")],
                                      ssl_context=client_ssl_context(tls_files.ca))
        assert parse(reply).get("MSA-1") == "AA"

    def test_bad_certificate_paths(self, tmp_path: Any, tls_files: TlsFiles) -> None:
        """Unreadable certificate files and mTLS without a CA raise TlsConfigError."""
        with pytest.raises(TlsConfigError, match="cannot load TLS"):
            server_ssl_context(str(tmp_path / "missing.crt"), str(tmp_path / "missing.key"))
        with pytest.raises(TlsConfigError, match="CA"):
            server_ssl_context(tls_files.server_cert, tls_files.server_key,
                               require_client_cert=True)
        with pytest.raises(TlsConfigError):
            client_ssl_context(str(tmp_path / "missing-ca.crt"))


class TestPythonHl7Clients:
    async def test_blocking_client_over_tcp(self, mllp_server: ServerFactory) -> None:
        """python-hl7's MLLPClient sends the sample and receives our AA."""
        recorder = Recorder()
        server = await mllp_server(recorder)
        text = sample_bytes("dft_p03_office_visit.hl7").decode()

        def send() -> bytes:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as client:
                reply: bytes = client.send_message(text)
                return reply

        reply = await asyncio.wait_for(asyncio.to_thread(send), WAIT)
        assert reply.startswith(b"\x0b") and reply.endswith(b"\x1c\x0d")
        ack = hl7.parse(reply[1:-2].decode())
        assert str(ack.segment("MSA")[1]) == "AA"
        assert str(ack.segment("MSA")[2]) == "NC20240315-0001"
        assert recorder.payloads == [text.encode()]

    @pytest.mark.parametrize("use_tls", [False, True])
    async def test_asyncio_client(self, mllp_server: ServerFactory, tls_files: TlsFiles,
                                  use_tls: bool) -> None:
        """python-hl7's asyncio MLLP client talks to us over plain TCP and over TLS."""
        recorder = Recorder()
        server_context = (server_ssl_context(tls_files.server_cert, tls_files.server_key)
                          if use_tls else None)
        server = await mllp_server(recorder, ssl_context=server_context)
        options: dict[str, Any] = {"encoding": "utf-8"}
        if use_tls:
            options["ssl"] = client_ssl_context(tls_files.ca)
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", server.port, **options)
        try:
            for name in ("dft_p03_office_visit.hl7", "adt_a08_update.hl7"):
                message = hl7.parse(sample_bytes(name).decode())
                writer.writemessage(message)
                await writer.drain()
                ack = await asyncio.wait_for(reader.readmessage(), WAIT)
                assert str(ack.segment("MSA")[1]) == "AA"
                assert str(ack.segment("MSA")[2]) == str(message.segment("MSH")[10])
        finally:
            writer.close()
        assert [parse(p).control_id for p in recorder.payloads] == [
            "NC20240315-0001", "NC20240322-0117"]
