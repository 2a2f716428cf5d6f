"""Public FHIR samples (the shared corpus, or $CHARGEBRIDGE_CORPUS/fhir) each get a clear
answer — a 2xx or an OperationOutcome — never a 500."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fhir.conftest import FhirNode


def _corpus() -> list[Path]:
    base = Path(os.environ.get("CHARGEBRIDGE_CORPUS", "/work/shared/corpus"))
    folder = base / "fhir" if (base / "fhir").is_dir() else base
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


FILES = _corpus()


@pytest.mark.skipif(not FILES, reason="no FHIR corpus (set CHARGEBRIDGE_CORPUS)")
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
async def test_corpus_file_gets_a_clear_answer(fhir_node: FhirNode, path: Path) -> None:
    """The file is accepted (2xx) or refused with an OperationOutcome; never a 500."""
    raw = path.read_bytes()
    try:
        rtype = json.loads(raw).get("resourceType", "Unknown")
    except (ValueError, AttributeError):
        rtype = "Unknown"
    target = "/fhir" if rtype == "Bundle" else f"/fhir/{rtype}"
    resp = await fhir_node.post(target, raw)
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert resp.json()["resourceType"] == "OperationOutcome"
        assert resp.json()["issue"], resp.text
