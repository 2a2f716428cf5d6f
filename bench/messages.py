"""Synthetic but realistic DFT^P03 messages, distinct per index (bench and kill tests)."""

from __future__ import annotations

_CODES = [("99213", "145.00"), ("93000", "55.00"), ("36415", "12.00"), ("85025", "28.00"),
          ("99214", "210.00")]


def make_dft(i: int, lines: int = 3, *, sender: str = "BENCHEHR") -> bytes:
    """DFT^P03 number `i` with `lines` FT1 segments; MSH-10 and the visit are unique."""
    visit = f"V{i:08d}"
    segs = [
        f"MSH|^~\\&|{sender}|NORTHCLINIC|CHARGEBRIDGE|NCBILLING|20240315143000||DFT^P03|"
        f"BENCH{i:09d}|P|2.5.1",
        "EVN|P03|20240315143000",
        f"PID|1||MRN{i % 5000:06d}^^^NORTHCLINIC^MR||Testpatient^Alex^Q||19800101|F|||"
        "1 Test Way^^Springfield^IL^62704^USA",
        f"PV1|1|O|NCFM^EXAM4^^NORTHCLINIC|R|||1234567893^Okafor^Daniel|||FM||||||||OP|"
        f"{visit}",
    ]
    for n in range(1, lines + 1):
        code, amount = _CODES[(i + n) % len(_CODES)]
        segs.append(f"FT1|{n}|T{i}-{n}||20240315|20240315143000|CG|{code}|||1|{amount}|"
                    f"{amount}|FM|||NCFM^EXAM4^^NORTHCLINIC|||E11.9~I10|1234567893^Okafor^"
                    f"Daniel|||||{code}")
    segs.append("IN1|1|BCBS-PPO|00621|Blue Cross Blue Shield of Illinois||||GRP778210|||||||"
                "PPO|Testpatient^Alex^Q|SEL|19800101||||||||||||||||||XOH884512037")
    return ("\r".join(segs) + "\r").encode()
