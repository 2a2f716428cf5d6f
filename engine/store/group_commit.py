"""Group commit: concurrent senders share one journal transaction (and one fsync).

Callers on any thread or event loop submit an InboundRecord and wait on a future; one
committer thread drains whatever has queued up, journals it in a single transaction, and
resolves every future. Under load many messages ride one fsync; idle, latency is one commit.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future

import structlog

from engine.store.base import SqlStore
from engine.store.records import InboundRecord, JournalOutcome

log = structlog.get_logger("chargebridge.store")
_STOP = object()


class GroupCommitter:
    """Owns the journal writer thread for one store."""

    def __init__(self, store: SqlStore, max_batch: int = 512) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, record: InboundRecord) -> Future[JournalOutcome]:
        future: Future[JournalOutcome] = Future()
        self._queue.put((record, future))
        return future

    async def journal(self, record: InboundRecord) -> JournalOutcome:
        """Journal one record durably; returns once its commit is on disk."""
        return await asyncio.wrap_future(self.submit(record))

    def close(self) -> None:
        """Finish everything queued so far, then stop the writer thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    @staticmethod
    def _fail(futures: list[Future[JournalOutcome]], exc: Exception) -> None:
        """Tell waiters their message was NOT journaled (they answer with no ACK)."""
        log.error("store.journal_failed", error=type(exc).__name__, count=len(futures))
        for future in futures:
            if not future.cancelled():
                future.set_exception(exc)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
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
            records = [item[0] for item in batch]  # type: ignore[index]
            futures: list[Future[JournalOutcome]] = [item[1] for item in batch]  # type: ignore[index]
            try:
                outcomes = self.store.journal(records)
            except Exception as exc:
                if len(batch) == 1:
                    self._fail(futures, exc)
                    continue
                # One bad record must not fail its neighbours: journal each on its own.
                for record, future in zip(records, futures, strict=True):
                    try:
                        [outcome] = self.store.journal([record])
                    except Exception as one_exc:
                        self._fail([future], one_exc)
                        continue
                    if not future.cancelled():
                        future.set_result(outcome)
                continue
            for future, outcome in zip(futures, outcomes, strict=True):
                if not future.cancelled():
                    future.set_result(outcome)
        self.store.close()
