"""Builders for mapping tests: mapping files in a temp dir and small DFT^P03 messages."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from engine.hl7.reader import Message, parse

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"
SAMPLES = ROOT / "samples" / "hl7"

MSH = "MSH|^~\\&|EHR|CLINIC|CB|BILLING|20240315143000||DFT^P03^DFT_P03|{control}|P|2.5.1"
PID = ("PID|1||MRN100234^^^CLINIC^MR||Rivera^Elena^Marie||19780412|F|||"
       "418 Juniper Hollow Rd^Apt 2B^Springfield^IL^62704^USA^H")
PV1 = ("PV1|1|O|NCFM^EXAM4^^CLINIC|R|||1234567893^Okafor^Daniel^^^^MD|||FM||||||||OP|"
       "V20240315001^^^CLINIC^VN")
IN1 = ("IN1|{n}|PLAN|{payer}|{name}|||||GRP1||||||PPO|Rivera^Elena|SEL^Self|19780412"
       "||||||||||||||||||{member}")


def ft1(set_id: str | int, code: str = "99213", *, date: str = "20240315", kind: str = "CG",
        units: str = "1", amount: str = "145.00", dx: str = "E11.9^^I10",
        modifiers: str = "", ft1_7: str | None = None, location: str = "") -> str:
    """One FT1 segment with the fields the standard mapping reads."""
    fields = [""] * 27
    fields[0] = "FT1"
    fields[1] = str(set_id)
    fields[4] = date
    fields[6] = kind
    fields[7] = ft1_7 if ft1_7 is not None else f"{code}^desc^C4"
    fields[10] = units
    fields[11] = amount
    fields[16] = location
    fields[19] = dx
    fields[20] = "1234567893^Okafor^Daniel"
    fields[25] = f"{code}^Procedure {code}^C4" if code else ""
    fields[26] = modifiers
    return "|".join(fields)


def dft(*segments: str, control: str = "MSG0001", pid: str = PID, pv1: str = PV1,
        insurance: list[str] | None = None) -> Message:
    """A DFT^P03 with the given FT1 (and other) segments, parsed."""
    ins = insurance if insurance is not None else [
        IN1.format(n=1, payer="00621", name="Blue Cross", member="XOH1")]
    lines = [MSH.format(control=control), "EVN|P03|20240315143000", pid, pv1, *segments, *ins]
    return parse("\r".join(lines) + "\r")


def write(tmp_path: Path, name: str, text: str) -> Path:
    """Write a (dedented) file under tmp_path and return its path."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def copy_standard(tmp_path: Path) -> Path:
    """A private copy of mappings/ (standard mapping + tables) to edit in a test."""
    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, target, ignore=shutil.ignore_patterns("tests"))
    return target
