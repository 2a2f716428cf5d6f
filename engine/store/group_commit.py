"""Group commit: concurrent senders share one journal transaction (and one fsync).

Callers on any thread or event loop submit an InboundRecord and wait; one committer thread
drains whatever has queued up, journals it in a single transaction, and answers every
waiter. Under load many messages ride one fsync; idle, latency is one commit.

Coroutines are batched on their event loop first: records that arrive in one loop iteration
form one batch, at most one batch per loop is with the writer at a time, and what arrives
meanwhile rides the next one, answered with one wake-up of the loop per commit. A lone
record (one busy sender, nothing in flight, the writer idle) is journaled on the loop's own
thread: handing it to the writer would only add two thread wake-ups to its latency.

The same thread promotes journaled messages out of the store's inbox (promote_inbox) when
it has been idle for a moment or a few hundred messages have piled up: promotion is cheap
per row in bulk, and doing it here keeps it from competing with a journal commit for the
write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from concurrent.futures import Future
from typing import Union

import structlog

from engine.store.base import SqlStore
from engine.store.records import InboundRecord, JournalOutcome

log = structlog.get_logger("chargebridge.store")
_STOP = object()
_PROMOTE = object()  # a wake-up: the inbox has rows to promote

# Who waits for a record: a thread (concurrent Future) or a coroutine (asyncio Future).
_Waiter = Union[Future[JournalOutcome], "asyncio.Future[JournalOutcome]"]
_Answer = JournalOutcome | BaseException


class GroupCommitter:
    """Owns the journal writer thread for one store."""

    def __init__(self, store: SqlStore, max_batch: int = 512, promote_after: int = 256,
                 promote_idle_seconds: float = 0.002, promote_chunk: int = 64) -> None:
        self.store = store
        store.journal_priority = True
        self.max_batch = max_batch
        self.promote_after = promote_after
        self.promote_idle_seconds = promote_idle_seconds
        self.promote_chunk = promote_chunk
        self._unpromoted = 0
        self._last_inline = 0.0  # monotonic time of the last inline journal
        self._busy = False  # the writer thread is journaling or promoting
        self._batchers: dict[asyncio.AbstractEventLoop, _LoopBatcher] = {}
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, record: InboundRecord) -> Future[JournalOutcome]:
        """For threads: a future resolved once the record's commit is on disk."""
        future: Future[JournalOutcome] = Future()
        self._queue.put((record, future))
        return future

    async def journal(self, record: InboundRecord) -> JournalOutcome:
        """Journal one record durably; returns once its commit is on disk."""
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = _LoopBatcher(self, loop)
        return await batcher.add(record)

    def close(self) -> None:
        """Finish everything queued so far, then stop the writer thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._next()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._busy = True
            records: list[InboundRecord] = []
            for item in batch:
                if isinstance(item, _LoopBatch):
                    records += item.records
                elif item is not _PROMOTE:
                    records.append(item[0])  # type: ignore[index]
            answers = self._journal(records) if records else []
            at = 0
            for item in batch:
                if isinstance(item, _LoopBatch):
                    item.batcher.completed(item.waiters, answers[at:at + len(item.records)])
                    at += len(item.records)
                elif item is not _PROMOTE:
                    _settle([(item[1], answers[at])])  # type: ignore[index]
                    at += 1
            if self._unpromoted >= self.promote_after:
                self._promote()
            self._busy = False
        if self._unpromoted:
            self._promote()
        self.store.close()

    def _next(self) -> object:
        """The next queued item; promotes the inbox first once nothing has been journaled
        for promote_idle_seconds (here or inline on an event loop)."""
        while self._unpromoted:
            try:
                return self._queue.get(timeout=self.promote_idle_seconds)
            except queue.Empty:
                if time.monotonic() - self._last_inline < self.promote_idle_seconds:
                    continue  # a lone sender is journaling inline: not quiet yet
                self._busy = True
                self._promote()
                self._busy = False
        return self._queue.get()

    def journal_inline(self, records: list[InboundRecord]) -> list[_Answer] | None:
        """Journal on the caller's thread (see _LoopBatcher), or None when that would mean
        waiting for the write lock (or the store cannot); the writer thread still promotes
        what this adds to the inbox."""
        before = self._unpromoted
        try:
            outcomes = self.store.journal_nowait(records)
        except Exception as exc:
            return [self._failed(exc) for _ in records]
        if outcomes is None:
            return None
        answers: list[_Answer] = list(outcomes)
        self._last_inline = time.monotonic()
        # Shared with the writer thread without a lock: a lost update only leaves rows in
        # the inbox until the next promotion, a read's settle() or a processor's claim.
        self._unpromoted += sum(not o.duplicate for o in outcomes)
        if not before or before < self.promote_after <= self._unpromoted:
            # Wakes the writer, which promotes once quiet (or now, past promote_after).
            self._queue.put(_PROMOTE)
        return answers

    def writer_idle(self) -> bool:
        return not self._busy and self._queue.empty()

    def _journal(self, records: list[InboundRecord]) -> list[_Answer]:
        """Each record's outcome, or the exception that kept it from being journaled."""
        try:
            outcomes: list[_Answer] = list(self.store.journal(records))
        except Exception as exc:
            if len(records) == 1:
                return [self._failed(exc)]
            # One bad record must not fail its neighbours: journal each on its own.
            outcomes = []
            for record in records:
                try:
                    outcomes += self.store.journal([record])
                except Exception as one_exc:
                    outcomes.append(self._failed(one_exc))
        self._unpromoted += sum(isinstance(o, JournalOutcome) and not o.duplicate
                                for o in outcomes)
        return outcomes

    @staticmethod
    def _failed(exc: Exception) -> Exception:
        """The record was NOT journaled: its waiter answers with no ACK."""
        log.error("store.journal_failed", error=type(exc).__name__)
        return exc

    def _promote(self) -> None:
        """Promote in chunks, releasing the write lock between them, and stop as soon as
        records wait to be journaled: a chunk is the longest an ACK waits for promotion."""
        try:
            while self.store.promote_inbox(self.promote_chunk) == self.promote_chunk:
                if not self._queue.empty():
                    return  # the rest after this commit (_unpromoted stays set)
        except Exception as exc:
            # Rows stay in the inbox (durable, readable); the next try or a claim moves them.
            log.warning("store.promote_failed", error=type(exc).__name__)
        self._unpromoted = 0


class _LoopBatch:
    """Records one event loop hands the writer thread at once."""

    __slots__ = ("batcher", "records", "waiters")

    def __init__(self, batcher: _LoopBatcher, records: list[InboundRecord],
                 waiters: list[_Waiter]) -> None:
        self.batcher = batcher
        self.records = records
        self.waiters = waiters


class _LoopBatcher:
    """Collects one event loop's journal calls into batches (see the module docstring)."""

    def __init__(self, committer: GroupCommitter, loop: asyncio.AbstractEventLoop) -> None:
        self.committer = committer
        self.loop = loop
        self.records: list[InboundRecord] = []
        self.waiters: list[_Waiter] = []
        self.scheduled = False
        self.in_flight = False

    def add(self, record: InboundRecord) -> asyncio.Future[JournalOutcome]:
        waiter: asyncio.Future[JournalOutcome] = self.loop.create_future()
        self.records.append(record)
        self.waiters.append(waiter)
        if not self.scheduled:
            # After every callback already ready in this iteration: the other senders
            # whose frames arrived together join this batch.
            self.scheduled = True
            self.loop.call_soon(self.flush)
        return waiter

    def flush(self) -> None:
        self.scheduled = False
        if self.in_flight or not self.records:
            return  # finished() flushes what gathered meanwhile
        records, waiters = self.records, self.waiters
        self.records, self.waiters = [], []
        committer = self.committer
        if len(records) == 1 and committer.writer_idle():
            answers = committer.journal_inline(records)
            if answers is not None:
                _settle(list(zip(waiters, answers, strict=True)))
                return
        self.in_flight = True
        committer._queue.put(_LoopBatch(self, records, waiters))

    def completed(self, waiters: list[_Waiter], answers: list[_Answer]) -> None:
        """Called on the writer thread: one wake-up of the loop answers the whole batch."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            self.loop.call_soon_threadsafe(self._answered, list(zip(waiters, answers,
                                                                   strict=True)))

    def _answered(self, pairs: list[tuple[_Waiter, _Answer]]) -> None:
        _settle(pairs)
        self.in_flight = False
        self.flush()


def _settle(pairs: list[tuple[_Waiter, _Answer]]) -> None:
    for waiter, answer in pairs:
        if waiter.cancelled():
            continue
        if isinstance(answer, BaseException):
            waiter.set_exception(answer)
        else:
            waiter.set_result(answer)
