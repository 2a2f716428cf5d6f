"""Fixtures for the HL7 tests: sample bytes, an MLLP server on an ephemeral port, TLS files."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.errors import HL7ReadError
from engine.hl7.ack import AckError, build_ack
from engine.hl7.mllp import MllpServer
from engine.hl7.reader import parse

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7"


def sample_bytes(name: str) -> bytes:
    """The bytes of a shipped sample message."""
    return (SAMPLES / name).read_bytes()


class Recorder:
    """An MLLP handler that records every payload and answers with a real ACK."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.peers: list[str] = []

    async def __call__(self, payload: bytes, peer: str) -> bytes | None:
        self.payloads.append(payload)
        self.peers.append(peer)
        try:
            msg = parse(payload)
        except HL7ReadError as exc:
            return build_ack(None, "AE", raw=payload, error=AckError(code=207, text=str(exc)),
                             ).encode()
        return build_ack(msg, "AA").encode(msg.codec)


ServerFactory = Callable[..., Awaitable[MllpServer]]


@pytest.fixture
async def mllp_server() -> AsyncIterator[ServerFactory]:
    """Start MllpServers on 127.0.0.1 port 0; all are stopped after the test."""
    started: list[MllpServer] = []

    async def start(handler: Callable[[bytes, str], Awaitable[bytes | None]],
                    **options: object) -> MllpServer:
        server = MllpServer(handler, "127.0.0.1", 0, **options)  # type: ignore[arg-type]
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(drain_timeout=5)


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA with a server certificate (127.0.0.1/localhost) and a client one."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(directory: Path, ca: str, name: str, ext: str) -> None:
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    (directory / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
             "-extfile", f"{name}.ext", cwd=directory)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Certificates generated for this run with the openssl command-line tool."""
    assert shutil.which("openssl"), "the TLS tests need the openssl command-line tool"
    directory = tmp_path_factory.mktemp("tls")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
                 "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN=ChargeBridge test {ca}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _issue(directory, "ca", "server",
           "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _issue(directory, "ca", "client", "extendedKeyUsage=clientAuth\n")
    return TlsFiles(
        ca=str(directory / "ca.crt"),
        server_cert=str(directory / "server.crt"),
        server_key=str(directory / "server.key"),
        client_cert=str(directory / "client.crt"),
        client_key=str(directory / "client.key"),
        other_ca=str(directory / "other-ca.crt"),
    )
