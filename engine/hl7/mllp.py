"""MLLP transport: framing, an asyncio server and a client. Protocol only, no store knowledge.

A frame is ``0x0B payload 0x1C 0x0D``. The server hands every complete frame to an async
handler, in order per connection, and writes back the framed reply the handler returns.
What it does with broken input:

- bytes before a start block are discarded (``mllp.bytes_discarded``);
- an empty frame is handed over as ``b""`` (the handler decides the NACK);
- a frame over `max_frame_bytes` closes the connection (``mllp.frame_too_large``);
- a connection dropped mid-frame handles nothing (``mllp.dropped_mid_frame``);
- past `max_connections`, new connections are closed at once (``mllp.connection_refused``);
- a connection idle for `idle_timeout_seconds` is closed (``mllp.idle_timeout``);
- on a TLS port, a failed handshake (e.g. a plaintext client) is closed and logged
  (``mllp.tls_handshake_failed``) without a traceback.

If the handler raises, the error is logged and the connection closed without a reply, so
the sender resends: no ACK is ever a promise the handler did not make.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import Awaitable, Callable

import structlog

from engine.errors import ChargeBridgeError

__all__ = [
    "END_BLOCK",
    "START_BLOCK",
    "Handler",
    "MllpError",
    "MllpServer",
    "frame",
    "send_messages",
    "split_file_messages",
]

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"

Handler = Callable[[bytes, str], Awaitable[bytes | None]]

log = structlog.get_logger("engine.hl7.mllp")

# Frames waiting per connection before the server stops reading from it (backpressure).
_PAUSE_FRAMES = 64


class MllpError(ChargeBridgeError, ConnectionError):
    """An MLLP exchange failed (connection refused or closed, no reply in time).

    Also a ConnectionError, so callers that treat any broken connection alike can.
    """


def frame(payload: bytes) -> bytes:
    """Wrap a payload in MLLP start and end blocks."""
    return START_BLOCK + payload + END_BLOCK


class _Connection(asyncio.Protocol):
    """One client connection: cuts frames out of the byte stream and runs them in order."""

    def __init__(self, server: MllpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.buffer = bytearray()
        self.in_frame = False  # buffer[0] is a start block whose end has not arrived
        self.scan_from = 0  # where to resume looking for the end block
        self.pending: collections.deque[bytes] = collections.deque()
        self.worker: asyncio.Task[None] | None = None
        self.wakeup: asyncio.Future[None] | None = None  # set while the worker waits for frames
        self.handling = False  # a handler call is in flight
        self.paused = False
        self.closed = False
        self.last_activity = self.loop.time()
        self.idle_handle: asyncio.TimerHandle | None = None

    # -- lifecycle -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self.peer = f"{peername[0]}:{peername[1]}"
        server = self.server
        if len(server._connections) >= server.max_connections:
            log.warning("mllp.connection_refused", peer=self.peer, reason="connection cap",
                        limit=server.max_connections)
            self.closed = True
            transport.abort()
            return
        server._connections.add(self)
        if server.stopping:
            self.close()
            return
        self._arm_idle_timer(server.idle_timeout_seconds)
        if server.ssl_context is not None:
            transport.pause_reading()
            server._track(self.loop.create_task(self._start_tls(transport)))

    async def _start_tls(self, transport: asyncio.Transport) -> None:
        server = self.server
        assert server.ssl_context is not None
        try:
            tls = await self.loop.start_tls(
                transport, self, server.ssl_context, server_side=True,
                ssl_handshake_timeout=min(server.idle_timeout_seconds, 30.0),
            )
        except (TimeoutError, OSError, ConnectionError) as exc:
            reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else type(
                exc).__name__
            log.warning("mllp.tls_handshake_failed", peer=self.peer, reason=str(reason))
            self.closed = True
            transport.abort()
            self.server._connections.discard(self)
            self._cancel_idle_timer()
            return
        if tls is None:  # the peer went away during the handshake
            self.connection_lost(None)
            return
        self.transport = tls

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_frame and self.buffer and not self.closed:
            log.warning("mllp.dropped_mid_frame", peer=self.peer, size=len(self.buffer))
        self.closed = True
        self.buffer.clear()
        self.pending.clear()
        self._cancel_idle_timer()
        self._wake()
        self.server._connections.discard(self)

    def close(self) -> None:
        """Close the connection (frames not yet handled are dropped; their sender resends)."""
        self.closed = True
        self.pending.clear()
        self._wake()
        if self.transport is not None:
            self.transport.close()

    # -- idle timeout --------------------------------------------------------------

    def _arm_idle_timer(self, delay: float) -> None:
        self.idle_handle = self.loop.call_later(delay, self._check_idle)

    def _cancel_idle_timer(self) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None

    def _check_idle(self) -> None:
        if self.closed:
            return
        timeout = self.server.idle_timeout_seconds
        quiet = self.loop.time() - self.last_activity
        busy = self.handling
        if quiet >= timeout and not busy:
            log.info("mllp.idle_timeout", peer=self.peer, seconds=timeout)
            self.close()
            return
        self._arm_idle_timer(max(timeout - quiet, 0.05) if not busy else timeout)

    # -- framing -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = self.loop.time()
        buf = self.buffer
        buf += data
        limit = self.server.max_frame_bytes
        pos = 0
        while True:
            if not self.in_frame:
                start = buf.find(START_BLOCK, pos)
                if start < 0:
                    self._discard(buf, pos, len(buf))
                    pos = len(buf)
                    break
                if start > pos:
                    self._discard(buf, pos, start)
                pos = start
                self.in_frame = True
                self.scan_from = start + 1
            end = buf.find(END_BLOCK, max(self.scan_from, pos + 1))
            if end < 0:
                # Keep one byte back: the 0x1C may have arrived without its 0x0D yet.
                self.scan_from = max(len(buf) - 1, pos + 1)
                if len(buf) - pos - 1 > limit + 1:
                    self._too_large(len(buf) - pos - 1)
                    return
                break
            restart = buf.rfind(START_BLOCK, pos + 1, end)
            if restart >= 0:
                # A new start block inside an unfinished frame: the sender gave up on it.
                log.warning("mllp.bytes_discarded", peer=self.peer, size=restart - pos,
                            reason="frame restarted before its end block")
                pos = restart
            size = end - pos - 1
            if size > limit:
                self._too_large(size)
                return
            self.pending.append(bytes(buf[pos + 1:end]))
            pos = end + 2
            self.in_frame = False
        if pos:
            del buf[:pos]
            self.scan_from = max(self.scan_from - pos, 0)
        if self.pending:
            if self.worker is None:
                self.worker = self.loop.create_task(self._work())
                self.server._track(self.worker)
            else:
                self._wake()
        if len(self.pending) >= _PAUSE_FRAMES and not self.paused and self.transport:
            self.paused = True
            self.transport.pause_reading()

    def _discard(self, buf: bytearray, start: int, end: int) -> None:
        if end <= start:
            return
        if bytes(buf[start:end]).isspace():
            log.debug("mllp.bytes_discarded", peer=self.peer, size=end - start,
                      reason="whitespace between frames")
        else:
            log.warning("mllp.bytes_discarded", peer=self.peer, size=end - start,
                        reason="bytes outside a frame")

    def _too_large(self, size: int) -> None:
        log.warning("mllp.frame_too_large", peer=self.peer, size=size,
                    limit=self.server.max_frame_bytes)
        self.buffer.clear()
        self.in_frame = False
        self.close()

    # -- handling ------------------------------------------------------------------

    def _wake(self) -> None:
        wakeup = self.wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _work(self) -> None:
        """Handle frames in arrival order for the life of the connection.

        One long-lived task per connection, woken when frames arrive, costs less than a
        task per message on the hot path.
        """
        server = self.server
        handler = server.handler
        pending = self.pending
        while not self.closed and not server.stopping:
            if not pending:
                self.wakeup = self.loop.create_future()
                await self.wakeup
                self.wakeup = None
                continue
            payload = pending.popleft()
            self.handling = True
            server._in_flight += 1
            try:
                reply = await handler(payload, self.peer)
            except Exception as exc:
                # No traceback: its frames hold the raw message (PHI).
                log.error("mllp.handler_failed", peer=self.peer, error=type(exc).__name__)
                self.close()
                return
            finally:
                self.handling = False
                server._in_flight -= 1
                if server._in_flight == 0 and server.stopping:
                    server._drained.set()
            self.last_activity = self.loop.time()
            transport = self.transport
            if reply is not None and transport is not None and not transport.is_closing():
                transport.write(START_BLOCK + reply + END_BLOCK)
            if self.paused and len(pending) < _PAUSE_FRAMES // 2 and transport is not None:
                self.paused = False
                transport.resume_reading()


class MllpServer:
    """An asyncio MLLP listener handing each frame to `handler(payload, peer)`."""

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        max_frame_bytes: int = 1 << 20,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 1000,
        idle_timeout_seconds: float = 300.0,
    ) -> None:
        self.handler = handler
        self.host = host
        self.requested_port = port
        self.max_frame_bytes = max_frame_bytes
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.idle_timeout_seconds = idle_timeout_seconds
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0  # handler calls running now
        self._drained = asyncio.Event()

    @property
    def port(self) -> int:
        """The bound port (useful after listening on port 0)."""
        if self._server is None or not self._server.sockets:
            raise MllpError("the MLLP server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connection_count(self) -> int:
        """Connections currently open."""
        return len(self._connections)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Start listening; TLS (when configured) is negotiated per connection."""
        loop = asyncio.get_running_loop()
        self.stopping = False
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self), self.host, self.requested_port, backlog=1024,
            )
        except OSError as exc:
            raise MllpError(
                f"cannot listen for MLLP on {self.host}:{self.requested_port}: {exc.strerror}"
            ) from exc
        log.info("mllp.listening", host=self.host, port=self.port,
                 transport="tls" if self.ssl_context else "tcp")

    async def stop(self, drain_timeout: float = 10) -> None:
        """Stop accepting, let handler calls in flight finish (up to `drain_timeout`), close."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            if conn.transport is not None and not conn.transport.is_closing():
                with contextlib.suppress(RuntimeError):
                    conn.transport.pause_reading()
        if self._in_flight:
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), drain_timeout)
            except TimeoutError:
                log.warning("mllp.drain_timeout", count=self._in_flight, seconds=drain_timeout)
        for task in list(self._tasks):
            if not task.done():
                task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        for conn in list(self._connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        log.info("mllp.stopped", host=self.host)


def _unframe(block: bytes) -> bytes:
    start = block.find(START_BLOCK)
    return block[start + 1 if start >= 0 else 0 : len(block) - len(END_BLOCK)]


async def send_messages(
    host: str,
    port: int,
    messages: list[bytes],
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
) -> list[bytes]:
    """Send each message framed on one connection, waiting for each reply; returns the replies.

    Raises MllpError when the connection fails, closes early, or a reply takes longer than
    `timeout` seconds.
    """
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_context, limit=1 << 24), timeout
        )
    except (TimeoutError, OSError) as exc:
        raise MllpError(f"cannot connect to MLLP {host}:{port}: {exc}") from exc
    replies: list[bytes] = []
    try:
        for number, message in enumerate(messages, 1):
            writer.write(frame(message))
            try:
                block = await asyncio.wait_for(reader.readuntil(END_BLOCK), timeout)
            except TimeoutError as exc:
                raise MllpError(
                    f"no MLLP reply to message {number} within {timeout} s from {host}:{port}"
                ) from exc
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
                raise MllpError(
                    f"{host}:{port} closed the connection before replying to message {number}"
                ) from exc
            replies.append(_unframe(block))
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 5.0)
    return replies


_BATCH_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")


def split_file_messages(data: bytes) -> list[bytes]:
    """Split a file of one or more messages into messages with \\r segment separators.

    A message starts at each MSH line; batch wrappers (FHS/BHS/BTS/FTS), blank lines and
    MLLP block characters are dropped. Lines before the first MSH are dropped too.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    text = data.replace(b"\x0b", b"\r").replace(b"\x1c", b"\r").replace(b"\n", b"\r")
    messages: list[bytes] = []
    current: list[bytes] | None = None
    for line in text.split(b"\r"):
        if not line.strip():
            continue
        head = line[:3]
        if head in _BATCH_SEGMENTS:
            if current:
                messages.append(b"\r".join(current) + b"\r")
            current = None
            continue
        if head == b"MSH":
            if current:
                messages.append(b"\r".join(current) + b"\r")
            current = [line]
        elif current is not None:
            current.append(line)
    if current:
        messages.append(b"\r".join(current) + b"\r")
    return messages
