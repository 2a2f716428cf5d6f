"""Ingest for HL7 v2 channels: read the header, journal durably, answer with an ACK.

The ACK is a promise: it is built only after the group committer says the raw bytes are
on disk. Bad input is journaled too (status ERROR, raw kept) and answered with AE/AR and
an ERR segment naming what was wrong. ACK modes follow MSH-15/MSH-16: original mode
(AA/AE/AR) unless the sender asks for enhanced mode, then commit ACKs (CA/CE/CR) sent
when MSH-15 says so (AL always, NE never, ER on error only, SU on success only).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from engine import metrics
from engine.config.models import ChannelConfig
from engine.connectors import IngestResult
from engine.errors import HL7ReadError
from engine.hl7.ack import AckError, build_ack
from engine.hl7.reader import Message, parse
from engine.hl7.strict import strict_problem
from engine.logging import debug_enabled
from engine.store.group_commit import GroupCommitter
from engine.store.records import ERROR, RECEIVED, InboundRecord

log = structlog.get_logger("chargebridge.ingest")

_ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}


class ChannelIngest:
    """The Ingest callable for one HL7 channel (see engine.connectors.Ingest)."""

    def __init__(self, channel: ChannelConfig, committer: GroupCommitter,
                 processed_waiter: Any = None) -> None:
        self.channel = channel
        self.committer = committer
        self.accept = frozenset(channel.accept)
        # For ack_timing "processed": an async callable (message_id) -> (status, reason).
        self.processed_waiter = processed_waiter

    async def __call__(self, raw: bytes, *, channel: str, peer: str, transport: str,
                       meta: dict[str, Any] | None = None) -> IngestResult:
        started = time.perf_counter()
        record = InboundRecord(channel=channel, raw=raw, transport=transport, peer=peer,
                               meta=meta or {},
                               duplicate_window_seconds=self.channel.duplicate_window_seconds)
        msg: Message | None = None
        problem: tuple[str, AckError] | None = None
        try:
            if not raw.strip():
                raise HL7ReadError("empty message", "MSH")
            msg = parse(raw)
            msh = msg.msh
            record.control_id = msh.get(10)
            record.message_type = msg.message_type
            record.sender = f"{msh.get(3) or ''}^{msh.get(4) or ''}"
            problem = self._header_problem(record)
            if problem is None and self.channel.strict_validation:
                # hl7apy takes milliseconds per message: keep it off the event loop.
                strict = await asyncio.to_thread(strict_problem, raw)
                if strict is not None:
                    problem = ("AE", strict)
        except HL7ReadError as exc:
            problem = ("AE", AckError("MSH", 1, None, 100, f"cannot read message: {exc}"))
        if problem is not None:
            record.status, record.reason = ERROR, problem[1].text
        outcome = await self.committer.journal(record)
        code = problem[0] if problem else "AA"
        error = problem[1] if problem else None
        text = ""
        if problem is None and outcome.duplicate:
            text = "duplicate: already received"
        elif (problem is None and self.channel.ack_timing == "processed"
              and self.processed_waiter is not None and msg is not None):
            status, reason = await self.processed_waiter(outcome.message_id)
            if status == ERROR or reason:
                code = "AE"
                error = AckError("MSH", 1, None, 207, reason or "processing failed")
        reply = self._reply(msg, raw, code, text, error)
        elapsed = time.perf_counter() - started
        metrics.observe_ack(channel, elapsed)
        # Per-message lines at debug keep the hot path lean; refusals are always logged.
        if problem is not None or debug_enabled():
            emit = log.warning if problem is not None else log.debug
            emit("message.journaled", channel=channel, message_id=outcome.message_id,
                 control_id=record.control_id, message_type=record.message_type,
                 status=record.status, duplicate=outcome.duplicate, transport=transport,
                 code=code, seconds=round(elapsed, 6))
        return IngestResult(outcome.message_id, "DUPLICATE" if outcome.duplicate else
                            record.status, reply, code in ("AA", "CA"),
                            record.reason or "")

    def _header_problem(self, record: InboundRecord) -> tuple[str, AckError] | None:
        """What the header alone says is wrong (message_type is None without MSH-9.1)."""
        message_type = record.message_type
        if not message_type:
            return ("AE", AckError("MSH", 1, 9, 101, "required field MSH-9 (message type) "
                                                     "is missing"))
        if not record.control_id:
            return ("AE", AckError("MSH", 1, 10, 101, "required field MSH-10 (message "
                                                      "control id) is missing"))
        if message_type not in self.accept and message_type.upper() not in self.accept:
            return ("AR", AckError("MSH", 1, 9, 200, f"message type {message_type} is "
                                   f"not accepted by channel {self.channel.name}"))
        return None

    def _reply(self, msg: Message | None, raw: bytes, code: str, text: str,
               error: AckError | None) -> bytes | None:
        mode = (msg.msh.get(15) or "").upper() if msg is not None else ""
        if mode:
            ack_code = _ENHANCED[code]
            ok = code == "AA"
            if mode == "NE" or (mode == "ER" and ok) or (mode == "SU" and not ok):
                return None
        else:
            ack_code = code
        codec = msg.codec if msg is not None else "utf-8"
        return build_ack(msg, ack_code, text=text, error=error, raw=raw).encode(codec, "replace")


async def wait_until_processed(store: Any, message_id: int, timeout: float = 30.0
                               ) -> tuple[str, str | None]:
    """Poll the store until a message leaves RECEIVED (for ack_timing: processed)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        msg = await asyncio.to_thread(store.get_message, message_id)
        if msg is not None and msg.status != RECEIVED:
            return msg.status, msg.reason
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
    return RECEIVED, None
