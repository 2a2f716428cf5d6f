"""The `mllp` source: HL7 v2 over MLLP (TCP, optionally TLS / mutual TLS).

Framing, connection limits and timeouts live in engine.hl7.mllp; this connector wires a
listener to the channel's ingest and declares the settings an analyst may write.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from engine.connectors import Source
from engine.hl7.mllp import MllpError, MllpServer
from engine.hl7.tls import server_ssl_context


class MllpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Listen address.")
    port: int = Field(2575, ge=0, le=65535, description="Listen port (0 = any free port).")
    max_frame_bytes: int = Field(1 << 20, ge=1024,
                                 description="Largest frame; a bigger one closes the connection.")
    max_connections: int = Field(1000, ge=1, description="Concurrent connections allowed.")
    idle_timeout_seconds: float = Field(300.0, gt=0,
                                        description="Close a connection idle this long.")
    tls_cert: Path | None = Field(None, description="PEM certificate; enables TLS.")
    tls_key: Path | None = Field(None, description="PEM private key for tls_cert.")
    tls_ca: Path | None = Field(None, description="CA bundle to verify client certificates.")
    tls_require_client_cert: bool = Field(False, description="Mutual TLS.")


class MllpSource(Source):
    """Listens for MLLP frames; each frame is journaled and answered with its ACK."""

    settings_model = MllpSettings
    settings: MllpSettings

    server: MllpServer | None = None

    async def start(self) -> None:
        s = self.settings
        ssl_context = None
        if s.tls_cert is not None and s.tls_key is not None:
            ssl_context = server_ssl_context(str(s.tls_cert), str(s.tls_key),
                                             str(s.tls_ca) if s.tls_ca else None,
                                             s.tls_require_client_cert)

        async def handle(payload: bytes, peer: str) -> bytes | None:
            result = await self.ingest(payload, channel=self.name, peer=peer, transport="mllp")
            return result.reply

        self.server = MllpServer(handle, s.host, s.port, max_frame_bytes=s.max_frame_bytes,
                                 ssl_context=ssl_context, max_connections=s.max_connections,
                                 idle_timeout_seconds=s.idle_timeout_seconds)
        await self.server.start()

    @property
    def port(self) -> int:
        """The bound port while listening, else the configured one."""
        if self.server is not None:
            try:
                return self.server.port
            except MllpError:  # stopped (e.g. the channel was stopped by an operator)
                pass
        return self.settings.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
