"""The `file` source on a real engine: single messages, batch and bare multi-MSH files,
archive/ and error/, batch trailer checks, a 100,000-message file, and resuming a file
after a restart without losing or duplicating a message."""

from __future__ import annotations

import asyncio
import io
import signal
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from channels.file_batch import BatchReader
from engine.store.sqlite import SqliteStore
from tests.engine_process import EngineProcess, wait_for
from tests.inbound.conftest import StartNode, channel, count, dft, wait_until


def _file_channel(inbox: Path, **settings: Any) -> dict[str, Any]:
    source = {"type": "file", "directory": str(inbox), "settle_seconds": 0,
              "poll_interval_seconds": 0.05, **settings}
    return channel("files", source=source)


def _batch(messages: list[bytes], *, bts: int | None = None, fts: int | None = None,
           sep: bytes = b"\r") -> bytes:
    """One batch file: FHS BHS messages BTS FTS with the given trailer counts."""
    body = b"".join(m.replace(b"\r", sep) for m in messages)
    return (b"FHS|^~\\&|ACMEEHR|NORTHCLINIC" + sep + b"BHS|^~\\&|ACMEEHR|NORTHCLINIC" + sep
            + body + b"BTS|" + str(len(messages) if bts is None else bts).encode() + sep
            + b"FTS|" + str(1 if fts is None else fts).encode() + sep)


def _positions(store: Any) -> list[tuple[str, int]]:
    return sorted((m.meta["file"], m.meta["index"]) for m in
                  store.search_messages(channel="files", limit=1_000_000))


class TestFileSource:
    async def test_single_message_file_is_journaled_and_archived(self, start_node: StartNode,
                                                                 tmp_path: Path) -> None:
        """A file with one message is journaled with its file name and position in meta, then
        moved to archive/."""
        inbox = tmp_path / "in"
        node = await start_node([_file_channel(inbox)])
        (inbox / "one.hl7").write_bytes(dft(1))
        await wait_until(lambda: (inbox / "archive" / "one.hl7").exists(), what="archive")
        [stored] = node.store.search_messages(channel="files")
        assert stored.raw == dft(1) and stored.transport == "file"
        assert stored.meta["file"] == "one.hl7" and stored.meta["index"] == 1
        assert stored.meta["offset"] == 0
        assert not (inbox / "one.hl7").exists()

    async def test_batch_file_with_newlines_yields_every_message(self, start_node: StartNode,
                                                                tmp_path: Path) -> None:
        """A FHS/BHS/BTS/FTS batch with \\n separators yields each message once, in order,
        without the batch segments; the file is archived with no trailer problem."""
        inbox = tmp_path / "in"
        node = await start_node([_file_channel(inbox)])
        messages = [dft(i) for i in range(1, 6)]
        (inbox / "batch.hl7").write_bytes(_batch(messages, sep=b"\n"))
        await wait_until(lambda: (inbox / "archive" / "batch.hl7").exists(), what="archive")
        stored = sorted(node.store.search_messages(channel="files"), key=lambda m: m.id)
        assert [m.raw for m in stored] == messages
        assert [m.meta["index"] for m in stored] == [1, 2, 3, 4, 5]
        assert {m.meta["batch"] for m in stored} == {1}
        events = node.store.events_for("file", "files/batch.hl7")
        assert [e.status for e in events] == ["ARCHIVED"]

    async def test_bare_multi_msh_file_with_crlf(self, start_node: StartNode,
                                                 tmp_path: Path) -> None:
        """Messages one after another without batch segments, \\r\\n separated, each
        journaled; offsets point at each MSH."""
        inbox = tmp_path / "in"
        node = await start_node([_file_channel(inbox)])
        messages = [dft(i) for i in range(10, 13)]
        data = b"".join(m.replace(b"\r", b"\r\n") for m in messages)
        (inbox / "bare.txt").write_bytes(data)
        await wait_until(lambda: (inbox / "archive" / "bare.txt").exists(), what="archive")
        stored = sorted(node.store.search_messages(channel="files"), key=lambda m: m.id)
        assert [m.raw for m in stored] == messages
        assert [data[m.meta["offset"]:m.meta["offset"] + 3] for m in stored] == [b"MSH"] * 3

    async def test_trailer_mismatch_is_reported_and_file_still_archived(
            self, start_node: StartNode, tmp_path: Path) -> None:
        """BTS-1 and FTS-1 counts that disagree with the file are recorded as file events;
        the messages are journaled and the file archived all the same."""
        inbox = tmp_path / "in"
        node = await start_node([_file_channel(inbox)])
        (inbox / "short.hl7").write_bytes(_batch([dft(20), dft(21)], bts=3, fts=2))
        await wait_until(lambda: (inbox / "archive" / "short.hl7").exists(), what="archive")
        assert count(node.store, channel="files") == 2
        events = node.store.events_for("file", "files/short.hl7")
        mismatches = [e.reason for e in events if e.status == "TRAILER_MISMATCH"]
        assert mismatches == ["BTS-1 of batch 1 says 3 messages, the batch has 2",
                              "FTS-1 says 2 batches, the file has 1"]

    async def test_unreadable_file_goes_to_error_with_reason(self, start_node: StartNode,
                                                             tmp_path: Path) -> None:
        """A file without any MSH (JSON here) moves to error/ with a .error.txt naming why;
        nothing is journaled."""
        inbox = tmp_path / "in"
        node = await start_node([_file_channel(inbox)])
        (inbox / "oops.json").write_bytes(b'{"not": "hl7"}\n')
        await wait_until(lambda: (inbox / "error" / "oops.json").exists(), what="error/")
        reason = (inbox / "error" / "oops.json.error.txt").read_text()
        assert "no HL7 message" in reason
        assert count(node.store, channel="files") == 0

    async def test_bad_message_inside_a_file_is_kept_as_error(self, start_node: StartNode,
                                                              tmp_path: Path) -> None:
        """A message without MSH-10 inside a file is journaled ERROR; its neighbours are not
        affected and the file is archived."""
        inbox = tmp_path / "in"
        node = await start_node([_file_channel(inbox)])
        (inbox / "mixed.hl7").write_bytes(dft(30) + dft(31).replace(b"|C31|", b"||") + dft(32))
        await wait_until(lambda: (inbox / "archive" / "mixed.hl7").exists(), what="archive")
        assert count(node.store, channel="files", status="RECEIVED") == 2
        [bad] = node.store.search_messages(channel="files", status="ERROR")
        assert bad.meta["index"] == 2

    async def test_oversized_message_sends_file_to_error(self, start_node: StartNode,
                                                         tmp_path: Path) -> None:
        """A message over max_message_bytes makes the file unreadable: error/ with a reason."""
        inbox = tmp_path / "in"
        await start_node([_file_channel(inbox, max_message_bytes=4096)])
        big = dft(40) + (b"NTE|1||" + b"y" * 500 + b"\r") * 20
        (inbox / "big.hl7").write_bytes(big)
        await wait_until(lambda: (inbox / "error" / "big.hl7").exists(), what="error/")
        assert "larger than 4096" in (inbox / "error" / "big.hl7.error.txt").read_text()

    async def test_same_name_twice_is_archived_under_a_new_name(self, start_node: StartNode,
                                                                tmp_path: Path) -> None:
        """A second file with a name already in archive/ never overwrites the first."""
        inbox = tmp_path / "in"
        node = await start_node([_file_channel(inbox)])
        (inbox / "daily.hl7").write_bytes(dft(50))
        await wait_until(lambda: (inbox / "archive" / "daily.hl7").exists(), what="archive")
        (inbox / "daily.hl7").write_bytes(dft(51))
        await wait_until(lambda: len(list((inbox / "archive").iterdir())) == 2,
                         what="second archive")
        assert count(node.store, channel="files") == 2

    @pytest.mark.timeout(600)
    async def test_100k_message_file_streams_through(self, start_node: StartNode,
                                                     tmp_path: Path) -> None:
        """A 100,000-message file is journaled completely, every message once (the control
        ids are unique, so duplicate detection is off here: this pins streaming)."""
        inbox = tmp_path / "in"
        node = await start_node([{**_file_channel(inbox), "duplicate_window_seconds": 0}])
        staging = tmp_path / "big.hl7"
        with open(staging, "wb") as fh:
            for i in range(100_000):
                fh.write(b"MSH|^~\\&|ACMEEHR|NC|CB|NC|20240315||DFT^P03|F%d|P|2.5.1\r"
                         b"PID|1||MRN%d\rFT1|1|T%d||20240315||CG|99213|||1|10.00\r" % (i, i, i))
        staging.rename(inbox / "big.hl7")
        await wait_until(lambda: (inbox / "archive" / "big.hl7").exists(), timeout=300,
                         what="100k file archived")
        node.store.settle()  # the journal's newest rows may still be in its inbox
        rows = sqlite3.connect(tmp_path / "store.db").execute(
            "SELECT COUNT(*), COUNT(DISTINCT control_id) FROM messages WHERE channel = 'files'"
        ).fetchone()
        assert rows == (100_000, 100_000)


class TestBatchReader:
    def test_reader_memory_stays_bounded_on_a_large_file(self, tmp_path: Path) -> None:
        """Reading a 100,000-message file of ~20 MB never holds more than a couple of MiB."""
        path = tmp_path / "large.hl7"
        with open(path, "wb") as fh:
            for i in range(100_000):
                fh.write(b"MSH|^~\\&|A|B|C|D|20240315||DFT^P03|M%d|P|2.5.1\rPID|1||X\r"
                         b"FT1|1|T1||20240315||CG|99213^Office visit^C4|||1|145.00|145.00|FM"
                         b"|||NCFM^EXAM4^^NORTHCLINIC|||E11.9^Diabetes^I10\r" % i)
        size = path.stat().st_size
        tracemalloc.start()
        try:
            with open(path, "rb") as fh:
                reader = BatchReader(fh)
                seen = 0
                while not reader.eof:
                    seen += len(reader.read())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert seen == 100_000
        assert size > 15 << 20 and peak < 2 << 20

    def test_batch_without_bts_is_a_trailer_problem(self) -> None:
        """A BHS whose batch never closes is reported at the end of the file."""
        reader = BatchReader(io.BytesIO(b"BHS|^~\\&\r" + dft(1)))
        items = []
        while not reader.eof:
            items += reader.read()
        assert len(items) == 1 and reader.trailer_problems == ["batch 1 has no BTS trailer"]

    def test_segments_split_across_chunks_are_joined(self) -> None:
        """Tiny chunks do not change what is read: each message comes out whole."""
        messages = [dft(i) for i in range(5)]
        reader = BatchReader(io.BytesIO(b"\xef\xbb\xbf" + b"".join(messages)), chunk_size=7)
        items = []
        while not reader.eof:
            items += reader.read()
        assert [i.data for i in items] == messages


class TestRestartMidFile:
    def test_kill_mid_file_then_restart_neither_loses_nor_duplicates(self,
                                                                     tmp_path: Path) -> None:
        """An engine killed (SIGKILL) while reading a file resumes after the last journaled
        message: every message of the file is in the store exactly once. Duplicate detection
        is off on the channel, so only the resume logic can prevent duplicates."""
        inbox = tmp_path / "in"
        inbox.mkdir()
        total = 10_000
        staging = tmp_path / "stage.hl7"
        staging.write_bytes(b"".join(dft(i) for i in range(total)))
        config = {
            "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
            "http": {"host": "127.0.0.1", "port": 0},
            "channels": [{**_file_channel(inbox, max_in_flight=1),
                          "duplicate_window_seconds": 0}],
        }
        first = EngineProcess(tmp_path, config, name="first", role="ingest").start()
        staging.rename(inbox / "feed.hl7")
        db = tmp_path / "store.db"

        def journaled() -> int:  # in messages, or still in the journal's inbox
            return int(sqlite3.connect(db, timeout=30).execute(
                "SELECT (SELECT COUNT(*) FROM messages) + (SELECT COUNT(*) FROM inbox)"
            ).fetchone()[0])

        wait_for(lambda: journaled() >= 50, what="some messages journaled")
        first.signal(signal.SIGKILL)
        first.proc.wait(30)  # type: ignore[union-attr]
        before = journaled()
        assert 0 < before < total, "the file must be cut off mid-way for this test"
        assert (inbox / "feed.hl7").exists()
        second = EngineProcess(tmp_path, {**config, "channels": [{
            **_file_channel(inbox), "duplicate_window_seconds": 0}]},
            name="second", role="ingest").start()
        try:
            wait_for(lambda: (inbox / "archive" / "feed.hl7").exists(), timeout=120,
                     what="file archived after restart")
        finally:
            second.stop()
        store = SqliteStore(db)
        positions = _positions(store)
        assert positions == [("feed.hl7", i) for i in range(1, total + 1)]
        assert len({m.control_id for m in store.search_messages(limit=1_000_000)}) == total

    async def test_graceful_stop_mid_file_resumes(self, start_node: StartNode,
                                                  tmp_path: Path) -> None:
        """A node stopped mid-file leaves the file in place; the next node finishes it and
        each message is stored once."""
        inbox = tmp_path / "in"
        total = 5_000
        staging = tmp_path / "stage.hl7"
        staging.write_bytes(b"".join(dft(i) for i in range(total)))
        cfg = [{**_file_channel(inbox, max_in_flight=1), "duplicate_window_seconds": 0}]
        node = await start_node(cfg, name="first")
        staging.rename(inbox / "feed.hl7")
        await wait_until(lambda: count(node.store, channel="files") >= 20, what="started")
        await node.stop()
        stopped_at = count(node.store, channel="files")
        assert stopped_at < total and (inbox / "feed.hl7").exists()
        await asyncio.sleep(0)
        node2 = await start_node(cfg, name="second")
        await wait_until(lambda: (inbox / "archive" / "feed.hl7").exists(), timeout=120,
                         what="archive after restart")
        assert _positions(node2.store) == [("feed.hl7", i) for i in range(1, total + 1)]


class TestResumeAfterOutOfOrderCommits:
    async def test_gap_left_by_a_crash_is_filled_and_nothing_is_doubled(
            self, start_node: StartNode, tmp_path: Path) -> None:
        """Messages 1, 2 and 4 of a file were journaled (3 was still in flight) when the
        engine died: the restart journals 3 and does not journal 4 again."""
        from channels.file import FileProgress, _fingerprint
        from engine.store import open_store
        from engine.store.records import InboundRecord

        inbox = tmp_path / "in"
        inbox.mkdir()
        messages = [dft(i) for i in range(41, 46)]
        path = inbox / "gap.hl7"
        path.write_bytes(b"".join(messages))
        fingerprint = _fingerprint(path)
        peer = f"file:gap.hl7#{fingerprint[:16]}"
        store = open_store(f"sqlite:///{tmp_path / 'store.db'}", fsync=False)
        FileProgress(store, "files").begin("gap.hl7", fingerprint)
        store.journal([InboundRecord("files", messages[i - 1], "file", peer=peer,
                                     meta={"file": "gap.hl7", "index": i})
                       for i in (1, 2, 4)])
        store.close()
        node = await start_node([_file_channel(inbox, max_in_flight=1)])
        await wait_until(lambda: (inbox / "archive" / "gap.hl7").exists(), what="archive")
        assert _positions(node.store) == [("gap.hl7", i) for i in range(1, 6)]
