"""The 837P destination inside a real engine: DFTs over MLLP, files read back and checked
with pyx12, corrections, `chargebridge flush`, and per-charge failures."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.messages import make_dft
from engine.hl7.mllp import send_messages
from engine.store.sqlite import SqliteStore
from engine.x12.validate import validate_837
from tests.engine_process import BILLING, ROOT, EngineProcess, engine_config, wait_for
from tests.x12_destination.conftest import clm05

SAMPLES = ROOT / "samples" / "hl7"


def _segments(raw: bytes) -> list[bytes]:
    return [s for s in raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r") if s]


def _sample(name: str) -> list[bytes]:
    return _segments((SAMPLES / name).read_bytes())


def _message(segments: list[bytes]) -> bytes:
    return b"\r".join(segments) + b"\r"


def _with_field(segments: list[bytes], seg: bytes, index: int, value: bytes) -> list[bytes]:
    """Set field `index` of every `seg` segment (MSH counts its separator as field 1)."""
    out = []
    for s in segments:
        if s.startswith(seg + b"|"):
            fields = s.split(b"|")
            fields[index - 1 if seg == b"MSH" else index] = value
            s = b"|".join(fields)
        out.append(s)
    return out


def _only_ft1(segments: list[bytes], keep: set[bytes]) -> list[bytes]:
    return [s for s in segments if not s.startswith(b"FT1|") or s.split(b"|")[1] in keep]


def _send(engine: EngineProcess, messages: list[bytes]) -> None:
    replies = asyncio.run(send_messages("127.0.0.1", engine.ports["ehr_dft"], messages))
    assert all(b"MSA|AA|" in r or b"MSA|CA|" in r for r in replies), replies


def _files(tmp: Path) -> list[Path]:
    return sorted((tmp / "out" / "837p").glob("*.837"))


def _charges(store: SqliteStore) -> list[tuple[str, str, str]]:
    return [(r[0], r[1], r[2]) for r in store._query(
        "SELECT charge_id, transaction_type, status FROM charges ORDER BY created_at")]


@pytest.fixture
def engine_for(tmp_path: Path) -> Iterator[Any]:
    """Start an engine under tmp_path with the given 837P destination settings."""
    started: list[EngineProcess] = []

    def start(**destination: Any) -> EngineProcess:
        config = engine_config(tmp_path, destinations=[{
            "name": "claims_837p", "type": "x12_837p", "directory": "837p",
            "batch_seconds": 0.5, **BILLING, **destination}])
        engine = EngineProcess(tmp_path, config).start()
        started.append(engine)
        return engine

    yield start
    for engine in started:
        assert engine.stop() == 0


class TestLongEncounter:
    def test_120_lines_become_three_valid_claims(self, tmp_path: Path, engine_for: Any) -> None:
        """A DFT with 120 FT1 lines for one encounter becomes three claims (50, 50, 20
        lines), every file valid by pyx12, every line billed once."""
        engine = engine_for()
        segments = _segments(make_dft(7, lines=120))
        first = date(2024, 1, 2)
        dated = []
        for s in segments:  # one visit a day: distinct lines, not duplicates
            if s.startswith(b"FT1|"):
                fields = s.split(b"|")
                day = first + timedelta(days=int(fields[1]) - 1)
                fields[4] = day.strftime("%Y%m%d").encode()
                s = b"|".join(fields)
            dated.append(s)
        _send(engine, [_message(dated)])
        store = SqliteStore(tmp_path / "store.db")
        wait_for(lambda: len(_charges(store)) == 120
                 and all(s == "SENT" for _, _, s in _charges(store)),
                 timeout=60, what="120 charges SENT")
        texts = [f.read_text() for f in _files(tmp_path)]
        for text in texts:
            verdict = validate_837(text)
            assert verdict.ok, verdict.errors[:3]
        claims = [c for text in texts for c in re.split(r"~\s*CLM\*", text)[1:]]
        assert sorted(c.count("LX*") for c in claims) == [20, 50, 50]
        lines = [m for text in texts for m in re.findall(r"REF\*6R\*([^~]+)~", text)]
        assert len(lines) == len(set(lines)) == 120


class TestCreditAfterSent:
    def test_credit_after_its_charge_was_sent_is_a_void_claim(
            self, tmp_path: Path, engine_for: Any) -> None:
        """A DFT credit (FT1-6 CD) for a line already billed on a one-line claim is
        written as a frequency-8 claim referring to that claim, and pyx12 accepts it."""
        engine = engine_for()
        visit = _only_ft1(_sample("dft_p03_office_visit.hl7"), {b"2"})  # the 93000 line
        _send(engine, [_message(visit)])
        store = SqliteStore(tmp_path / "store.db")
        wait_for(lambda: [s for _, _, s in _charges(store)] == ["SENT"], what="charge SENT")
        [(original_id, _, _)] = _charges(store)
        original_claim = json.loads(store.deliveries_for_charge(original_id)[0]["result"])
        _send(engine, [_message(_sample("dft_p03_credit.hl7"))])
        wait_for(lambda: len(_charges(store)) == 2 and _charges(store)[1][2] == "SENT",
                 what="the credit SENT")
        credit_id = _charges(store)[1][0]
        [void] = store.deliveries_for_charge(credit_id)
        assert void["kind"] == "void"
        text = (tmp_path / "out" / "837p" / json.loads(void["result"])["file"]).read_text()
        assert clm05(text) == ["11:B:8"]
        assert f"REF*F8*{original_claim['claim_id']}~" in text
        assert "SV1*HC:93000*55.00*UN*1" in text
        verdict = validate_837(text)
        assert verdict.ok, verdict.errors[:3]

    def test_credit_for_one_line_of_three_is_held(self, tmp_path: Path,
                                                   engine_for: Any) -> None:
        """The sample credit against the sample three-line visit is HELD with its reason:
        voiding that claim would also cancel the two lines still owed."""
        engine = engine_for()
        _send(engine, [_message(_sample("dft_p03_office_visit.hl7"))])
        store = SqliteStore(tmp_path / "store.db")
        wait_for(lambda: [s for _, _, s in _charges(store)] == ["SENT"] * 3,
                 what="three charges SENT")
        _send(engine, [_message(_sample("dft_p03_credit.hl7"))])
        wait_for(lambda: len(_charges(store)) == 4, what="the credit stored")
        credit_id, _, status = _charges(store)[3]
        assert status == "HELD"
        _, _, findings, _ = store.get_charge(credit_id)
        assert any(f.rule == "credit_partial_claim" for f in findings)
        assert len(_files(tmp_path)) == 1


class TestFlushAndFailures:
    def test_flush_writes_now_and_a_bad_charge_fails_alone(
            self, tmp_path: Path, engine_for: Any) -> None:
        """With batch_seconds an hour, `chargebridge flush` writes the pending batch at
        once; a charge failing the claim checks (a state that is not a 2-letter code) goes
        FAILED with that reason while the other charges are written to a valid file."""
        engine = engine_for(batch_seconds=3600)
        good = _message(_sample("dft_p03_office_visit.hl7"))
        bad = _with_field(_segments(make_dft(8, lines=1)), b"PID", 11,
                          b"1 Test Way^^Springfield^Illinois^62704^USA")
        _send(engine, [good, _message(bad)])
        store = SqliteStore(tmp_path / "store.db")
        wait_for(lambda: store.pending_deliveries("claims_837p")[0] == 4,
                 what="four deliveries queued")
        assert _files(tmp_path) == []
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", "flush", "claims_837p", "--config",
             str(engine.config_path), "--wait", "30"],
            cwd=str(ROOT), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: all(s in ("SENT", "FAILED") for _, _, s in _charges(store)),
                 what="the flushed batch delivered")
        statuses = sorted(s for _, _, s in _charges(store))
        assert statuses == ["FAILED", "SENT", "SENT", "SENT"]
        [failed] = [c for c, _, s in _charges(store) if s == "FAILED"]
        detail = store.deliveries_for_charge(failed)[0]["detail"]
        assert "patient.address.state" in detail and "2-letter" in detail
        [path] = _files(tmp_path)
        text = path.read_text()
        assert text.count("LX*") == 3 and failed not in text
        assert validate_837(text).ok

    def test_flush_names_an_unknown_destination(self, tmp_path: Path) -> None:
        """`chargebridge flush` with a destination not in the config exits 1 naming it."""
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump(engine_config(tmp_path)))
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", "flush", "nowhere", "--config", str(config)],
            cwd=str(ROOT), capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and "nowhere" in done.stderr
        assert "claims_837p" in done.stderr
