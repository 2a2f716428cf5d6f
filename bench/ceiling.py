"""The transport ceiling: a bare asyncio MLLP server that answers every frame with a
fixed ACK and stores nothing.

`python -m bench.ceiling PORTFILE [CERT KEY]` serves until killed; with a certificate and
key it serves TLS through the same server context the engine's MLLP source uses.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from engine.hl7.mllp import MllpServer
from engine.hl7.tls import server_ssl_context

ACK = b"MSH|^~\\&|CB|CB|EHR|EHR|20240101000000||ACK^P03^ACK|1|P|2.5.1\rMSA|AA|1\r"


async def serve(port_file: Path, cert: str | None = None, key: str | None = None) -> None:
    async def handler(payload: bytes, peer: str) -> bytes:
        return ACK

    context = server_ssl_context(cert, key) if cert and key else None
    server = MllpServer(handler, "127.0.0.1", 0, ssl_context=context)
    await server.start()
    port_file.write_text(str(server.port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(serve(Path(args[0]), *(args[1:3] if len(args) >= 3 else ())))
