"""The transport ceiling: a bare asyncio MLLP server that answers every frame with a
fixed ACK and stores nothing. `python -m bench.ceiling PORTFILE` serves until killed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from engine.hl7.mllp import MllpServer

ACK = b"MSH|^~\\&|CB|CB|EHR|EHR|20240101000000||ACK^P03^ACK|1|P|2.5.1\rMSA|AA|1\r"


async def serve(port_file: Path) -> None:
    async def handler(payload: bytes, peer: str) -> bytes:
        return ACK

    server = MllpServer(handler, "127.0.0.1", 0)
    await server.start()
    port_file.write_text(str(server.port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
