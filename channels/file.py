"""The `file` source: HL7 v2 files dropped into a directory, polled and streamed.

Each file may hold one message, a batch file (FHS/BHS ... BTS/FTS) or bare MSH messages
one after another. Every message goes through the channel's ingest (journal, dedupe,
ERROR for what cannot be read) with the file name, message number and byte offset in its
meta. A file moves to `archive/` once every message in it is journaled, and to `error/`
(with a `<name>.error.txt` saying why) when it cannot be read at all.

Restarts: a `file_progress` row (migration 0011) marks a file being read. Journal order
follows file order (one ingest caller, group commit in submission order), so after a
crash the last journaled message of the file (peer `file:<name>#<fingerprint>`) tells
exactly where to resume: nothing is lost and nothing is journaled twice. Batch trailer
counts that do not match are logged and recorded as a `file` event; the file is still
archived, because its messages were all journaled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from channels.file_batch import BatchReader, FileUnreadable
from engine.connectors import IngestResult, Source

__all__ = ["FileProgress", "FileSettings", "FileSource"]

log = structlog.get_logger("chargebridge.file")

READING, DONE, FAILED = "READING", "DONE", "ERROR"
_FINGERPRINT_BYTES = 1 << 16
# How far before a progress row's start the resume query looks (clock steps, slow commits).
_RESUME_MARGIN_SECONDS = 60.0


class FileSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    directory: Path = Field(description="Directory watched for HL7 files (created if absent).")
    pattern: str = Field("*", description="Glob of file names to read (e.g. '*.hl7'); names "
                         "starting with '.' are always skipped.")
    archive_dir: Path | None = Field(None, description="Where fully journaled files go "
                                     "(default: <directory>/archive).")
    error_dir: Path | None = Field(None, description="Where unreadable files go "
                                   "(default: <directory>/error).")
    poll_interval_seconds: float = Field(1.0, gt=0, description="Seconds between scans.")
    settle_seconds: float = Field(2.0, ge=0, description="A file is read only once it has not "
                                  "changed for this long (a writer may still be writing).")
    max_message_bytes: int = Field(10 << 20, ge=1024,
                                   description="Largest message; a bigger one makes the file "
                                   "unreadable.")
    max_in_flight: int = Field(256, ge=1, description="Messages journaling at once per file "
                               "(they share commits).")


@dataclass
class _Progress:
    started_at: float
    next_index: int  # every message numbered up to here is journaled
    exact: bool  # next_index is exact (after a failed commit): do not consult the journal


class FileProgress:
    """The `file_progress` rows of one channel: which file is being read, how far."""

    def __init__(self, store: Any, channel: str) -> None:
        self.store = store
        self.channel = channel

    def begin(self, name: str, fingerprint: str) -> _Progress:
        """Start (or resume) reading a file; returns where a resumed read had got to."""
        now = time.time()
        with self.store.transaction() as cur:
            row = self.store._exec(cur, "SELECT status, started_at, next_index, exact FROM "
                                        "file_progress WHERE channel = ? AND name = ? AND "
                                        "fingerprint = ?",
                                   (self.channel, name, fingerprint)).fetchone()
            if row is not None and row[0] == READING:
                return _Progress(float(row[1]), int(row[2]), bool(row[3]))
            self.store._exec(cur, "INSERT INTO file_progress (channel, name, fingerprint, "
                                  "status, started_at, next_index, exact, messages, detail, "
                                  "updated_at) VALUES (?, ?, ?, ?, ?, 0, 0, 0, NULL, ?) "
                                  "ON CONFLICT (channel, name, fingerprint) DO UPDATE SET "
                                  "status = ?, started_at = ?, next_index = 0, exact = 0, "
                                  "messages = 0, detail = NULL, updated_at = ?",
                             (self.channel, name, fingerprint, READING, now, now,
                              READING, now, now))
        return _Progress(now, 0, False)

    def journaled_indexes(self, peer: str, since: float) -> set[int]:
        """The message numbers of this file already in the journal.

        Concurrent ingests may commit out of file order (e.g. strict validation runs in
        threads), so a crash can leave gaps: the caller resumes after the unbroken prefix
        and skips the numbers journaled beyond it.
        """
        self.store.settle()  # messages just journaled may still be in the store's inbox
        rows = self.store._query("SELECT meta FROM messages WHERE channel = ? AND peer = ? "
                                 "AND received_at >= ?",
                                 (self.channel, peer, since - _RESUME_MARGIN_SECONDS))
        return {int(json.loads(r[0] or "{}").get("index", 0)) for r in rows}

    def save(self, name: str, fingerprint: str, next_index: int, exact: bool = False) -> None:
        """Record that messages 1..next_index are journaled. `exact` after a failed commit:
        later messages may be journaled too (a gap), so resume from here, and dedupe
        answers for those."""
        with self.store.transaction() as cur:
            self.store._exec(cur, "UPDATE file_progress SET next_index = ?, exact = ?, "
                                  "updated_at = ? WHERE channel = ? AND name = ? AND "
                                  "fingerprint = ?",
                             (next_index, 1 if exact else 0, time.time(), self.channel, name,
                              fingerprint))

    def finish(self, name: str, fingerprint: str, status: str, messages: int,
               detail: str | None, problems: list[str]) -> None:
        """Close a file's progress and record what happened as `file` events."""
        now = time.time()
        entity = f"{self.channel}/{name}"
        with self.store.transaction() as cur:
            self.store._exec(cur, "UPDATE file_progress SET status = ?, next_index = ?, "
                                  "messages = ?, detail = ?, updated_at = ? WHERE channel = ? "
                                  "AND name = ? AND fingerprint = ?",
                             (status, messages, messages, detail, now, self.channel, name,
                              fingerprint))
            for problem in problems:
                self.store._event(cur, "file", entity, "TRAILER_MISMATCH", problem, now)
            self.store._event(cur, "file", entity, "ARCHIVED" if status == DONE else FAILED,
                              detail, now)


class FileSource(Source):
    """Polls a directory and journals every message of every file it finds."""

    settings_model = FileSettings
    settings: FileSettings

    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        state = getattr(self, "state", None)
        if state is None:
            raise RuntimeError("the file source needs the engine state (store) before start()")
        self.progress = FileProgress(state.store, self.name)
        s = self.settings
        self.inbox = s.directory
        self.archive = s.archive_dir or s.directory / "archive"
        self.errors = s.error_dir or s.directory / "error"
        for folder in (self.inbox, self.archive, self.errors):
            folder.mkdir(parents=True, exist_ok=True)
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"file-source-{self.name}")
        log.info("file.watching", channel=self.name, path=str(self.inbox))

    async def stop(self) -> None:
        """Stop after the messages in flight are journaled; a file half read stays where it
        is and is resumed at the next start."""
        if self._task is None:
            return
        self._stopping.set()
        await self._task
        self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                for path in await asyncio.to_thread(self._ready_files):
                    if self._stopping.is_set():
                        break
                    await self._read_file(path)
            except Exception as exc:  # store or filesystem trouble: log, wait, scan again
                log.error("file.scan_failed", channel=self.name,
                          error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(),
                                       self.settings.poll_interval_seconds)

    def _ready_files(self) -> list[Path]:
        """Files matching the pattern that have settled, oldest first."""
        now = time.time()
        found: list[tuple[float, str, Path]] = []
        with os.scandir(self.inbox) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not fnmatch.fnmatch(entry.name,
                                                                     self.settings.pattern):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    mtime = entry.stat().st_mtime
                except OSError:
                    continue
                if now - mtime >= self.settings.settle_seconds:
                    found.append((mtime, entry.name, Path(entry.path)))
        return [path for _, _, path in sorted(found)]

    async def _read_file(self, path: Path) -> None:
        name = path.name
        try:
            fingerprint = await asyncio.to_thread(_fingerprint, path)
        except OSError as exc:
            await self._fail(path, None, 0, f"cannot read file: {exc.strerror or exc}")
            return
        progress = await asyncio.to_thread(self.progress.begin, name, fingerprint)
        peer = f"file:{name}#{fingerprint[:16]}"
        resume = progress.next_index
        already: set[int] = set()
        if not progress.exact:
            already = await asyncio.to_thread(self.progress.journaled_indexes, peer,
                                              progress.started_at)
            while resume + 1 in already:
                resume += 1
        log.info("file.resumed" if resume else "file.started", channel=self.name, file=name,
                 count=resume)
        run = _FileRun(resume, {i for i in already if i > resume})
        try:
            with open(path, "rb") as fh:  # the reads themselves run in a thread
                reader = BatchReader(fh, max_message_bytes=self.settings.max_message_bytes)
                await self._journal_all(reader, run, name, fingerprint, peer)
        except (FileUnreadable, OSError) as exc:
            await run.drain()
            detail = str(exc) if isinstance(exc, FileUnreadable) else (
                f"cannot read file: {exc.strerror or exc}")
            await self._fail(path, fingerprint, run.done_index, detail)
            return
        if run.failure is not None:  # the journal failed: keep the file, resume next scan
            await asyncio.to_thread(self.progress.save, name, fingerprint, run.done_index, True)
            log.error("file.journal_failed", channel=self.name, file=name, count=run.done_index,
                      error=run.failure)
            return
        if not reader.eof:  # stopping: keep the file, remember how far we got
            await asyncio.to_thread(self.progress.save, name, fingerprint, run.done_index)
            log.info("file.paused", channel=self.name, file=name, count=run.done_index)
            return
        if reader.messages == 0:
            await self._fail(path, fingerprint, 0, "no HL7 message (no MSH segment) in file")
            return
        problems = reader.trailer_problems
        for problem in problems:
            log.warning("file.trailer_mismatch", channel=self.name, file=name, detail=problem)
        target = await asyncio.to_thread(_move, path, self.archive)
        await asyncio.to_thread(self.progress.finish, name, fingerprint, DONE, reader.messages,
                                None, problems)
        log.info("file.archived", channel=self.name, file=name, count=reader.messages,
                 path=str(target), detail=f"{len(problems)} trailer mismatch(es)")

    async def _journal_all(self, reader: BatchReader, run: _FileRun, name: str,
                           fingerprint: str, peer: str) -> None:
        """Feed every message after `run.resume` to ingest, `max_in_flight` at a time."""
        last_saved = time.monotonic()
        while not reader.eof and not self._stopping.is_set() and run.failure is None:
            for item in await asyncio.to_thread(reader.read):
                if item.index <= run.resume or item.index in run.already:
                    continue
                meta = {"file": name, "index": item.index, "offset": item.offset,
                        "batch": item.batch, "fingerprint": fingerprint[:16]}
                run.inflight.append((item.index, asyncio.create_task(self.ingest(
                    item.data, channel=self.name, peer=peer, transport="file", meta=meta))))
                while len(run.inflight) >= self.settings.max_in_flight:
                    await run.settle_oldest()
            if time.monotonic() - last_saved > 2.0 and run.failure is None:
                last_saved = time.monotonic()
                await asyncio.to_thread(self.progress.save, name, fingerprint, run.done_index)
        await run.drain()

    async def _fail(self, path: Path, fingerprint: str | None, messages: int,
                    detail: str) -> None:
        target = await asyncio.to_thread(_move, path, self.errors)
        await asyncio.to_thread(target.with_name(target.name + ".error.txt").write_text,
                                detail + "\n", "utf-8")
        if fingerprint is not None:
            await asyncio.to_thread(self.progress.finish, path.name, fingerprint, FAILED,
                                    messages, detail, [])
        log.warning("file.unreadable", channel=self.name, file=path.name, detail=detail,
                    path=str(target))


class _FileRun:
    """The messages of one file in flight, settled in file order."""

    def __init__(self, resume: int, already: set[int] | None = None) -> None:
        self.resume = resume
        self.already = already or set()  # journaled beyond `resume` before a crash
        self.done_index = resume  # messages 1..done_index are journaled
        self.failure: str | None = None
        self.inflight: collections.deque[tuple[int, asyncio.Task[IngestResult]]] = (
            collections.deque())

    async def settle_oldest(self) -> None:
        index, task = self.inflight.popleft()
        try:
            await task
        except Exception as exc:
            if self.failure is None:
                self.failure = f"{type(exc).__name__}: {exc}"
            return
        if self.failure is None:
            self.done_index = index

    async def drain(self) -> None:
        while self.inflight:
            await self.settle_oldest()


def _fingerprint(path: Path) -> str:
    """Identifies a file's content cheaply: its size and first 64 KiB."""
    with open(path, "rb") as fh:
        head = fh.read(_FINGERPRINT_BYTES)
        size = os.fstat(fh.fileno()).st_size
    return hashlib.sha256(str(size).encode() + b"\0" + head).hexdigest()


def _move(path: Path, folder: Path) -> Path:
    """Move `path` into `folder`, never overwriting: a taken name gets a time suffix."""
    target = folder / path.name
    if target.exists():
        target = folder / f"{path.name}.{time.strftime('%Y%m%d%H%M%S')}.{time.time_ns() % 10**9}"
    os.replace(path, target)
    return target
