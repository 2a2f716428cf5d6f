"""ADT context: ADT messages processed by the real processor keep patient, visit and
coverage context in the store; DFT charges are enriched from it per channel mode with
provenance, and a DFT disagreeing with it gets a held demographic-mismatch finding."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from engine.charge import Charge, Coverage, Encounter, Patient
from engine.config.models import ChannelConfig, ConnectorConfig
from engine.context import MISMATCH_RULE, enrich, load_context
from engine.hl7.reader import parse
from engine.mapping import load_mapping
from engine.pipeline.hooks import default_hooks
from engine.pipeline.processor import ChannelPlan, Processor
from engine.store import open_store
from engine.store.base import SqlStore
from engine.store.records import PROCESSED, InboundRecord
from tests.inbound.conftest import ROOT, dft, sample


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    return open_store(f"sqlite:///{tmp_path / 'ctx.db'}", fsync=False)


def _channel(enrichment: str = "fill-missing") -> ChannelConfig:
    return ChannelConfig(name="adt", source=ConnectorConfig(type="mllp"),
                         enrichment=enrichment)  # type: ignore[arg-type]


def _process(store: SqlStore, raw: bytes) -> int:
    """Journal `raw` and run the real processor (its hooks answer ADT) once; the id."""
    [outcome] = store.journal([InboundRecord(channel="adt", raw=raw, transport="mllp",
                                             control_id=parse(raw).control_id)])
    plan = ChannelPlan(_channel(), None, [])
    processor = Processor(store, {"adt": plan}, None, None,
                          message_hooks=default_hooks(None, store))
    assert processor.run_once() == 1
    return outcome.message_id


def _adt_a08_older() -> bytes:
    return (sample("adt_a08_update").replace(b"20240322091500", b"20240301000000")
            .replace(b"NC20240322-0117", b"NC-OLD-1").replace(b"15 Cedar Bluff Ln", b"Old Rd"))


def _charge(**fields: Any) -> Charge:
    patient = fields.pop("patient", Patient(mrn="MRN300415"))
    return Charge(charge_id="ch_test", patient=patient,
                  encounter=Encounter(id=fields.pop("visit", "V20240322004")), **fields)


class TestContextKept:
    def test_a04_is_processed_and_keeps_patient_visit_coverage(self, store: SqlStore) -> None:
        """An A04 ends PROCESSED and the store knows its patient, visit and coverage, each
        field pointing at the A04's message id."""
        adt = _process(store, sample("adt_a04_register"))
        assert store.get_message(adt).status == PROCESSED  # type: ignore[union-attr]
        known = load_context(store, "MRN300415", "V20240322004")
        assert known.fields["patient.last_name"] == "Lindqvist"
        assert known.fields["patient.birth_date"] == "1991-08-07"
        assert known.fields["encounter.patient_class"] == "O"
        assert known.sources["patient.birth_date"] == adt
        assert [c["member_id"] for c in known.coverage] == ["918273645"]
        assert known.coverage_source == adt

    def test_a08_updates_address_and_coverage_keeps_the_rest(self, store: SqlStore) -> None:
        """An A08 replaces the address and the coverage list; fields it repeats point at it."""
        _process(store, sample("adt_a04_register"))
        a08 = _process(store, sample("adt_a08_update"))
        known = load_context(store, "MRN300415", None)
        assert known.fields["patient.address.line1"] == "15 Cedar Bluff Ln"
        assert known.sources["patient.address.line1"] == a08
        assert [c["payer_id"] for c in known.coverage] == ["87726", "IL-MCD"]

    def test_older_message_does_not_roll_context_back(self, store: SqlStore) -> None:
        """An ADT with an earlier MSH-7 processed after a newer one changes nothing."""
        _process(store, sample("adt_a08_update"))
        _process(store, _adt_a08_older())
        known = load_context(store, "MRN300415", None)
        assert known.fields["patient.address.line1"] == "15 Cedar Bluff Ln"

    def test_a03_records_discharge_date(self, store: SqlStore) -> None:
        """An A03 with PV1-45 sets the visit's discharge date."""
        _process(store, sample("adt_a04_register"))
        raw = sample("adt_a04_register").replace(b"ADT^A04", b"ADT^A03").replace(
            b"NC20240322-0101", b"NC-A03").replace(b"20240322081200\r", b"20240322081200|"
                                                   b"20240323120000\r")
        _process(store, raw)
        known = load_context(store, "MRN300415", "V20240322004")
        assert known.fields["encounter.discharge_date"] == "2024-03-23"

    def test_other_adt_events_are_processed_without_context(self, store: SqlStore) -> None:
        """An A02 (transfer) is PROCESSED but keeps no context."""
        raw = sample("adt_a04_register").replace(b"ADT^A04", b"ADT^A02")
        adt = _process(store, raw)
        assert store.get_message(adt).status == PROCESSED  # type: ignore[union-attr]
        assert load_context(store, "MRN300415", None).empty


class TestEnrichment:
    def test_fill_missing_fills_demographics_and_coverage_with_provenance(
            self, store: SqlStore) -> None:
        """A charge without name, birth date or coverage gets them from the ADT context; each
        enriched field says which ADT message it came from."""
        adt = _process(store, sample("adt_a04_register"))
        [(charge, findings)] = enrich(store, _channel(), [(_charge(), [])])
        assert charge.patient.last_name == "Lindqvist"
        assert charge.patient.birth_date == date(1991, 8, 7)
        assert charge.coverage[0].member_id == "918273645"
        assert charge.source["enriched"]["patient.birth_date"] == f"ADT message {adt}"
        assert charge.source["enriched"]["coverage"] == f"ADT message {adt}"
        assert findings == []

    def test_fill_missing_keeps_what_the_dft_says(self, store: SqlStore) -> None:
        """A charge that has its own coverage and address keeps them under fill-missing."""
        _process(store, sample("adt_a08_update"))
        own = Coverage(payer_id="OWN", member_id="M1")
        patient = Patient(mrn="MRN300415", address={"line1": "DFT street"})  # type: ignore[arg-type]
        [(charge, _)] = enrich(store, _channel(), [(_charge(patient=patient, coverage=[own]),
                                                    [])])
        assert charge.patient.address.line1 == "DFT street"
        assert [c.payer_id for c in charge.coverage] == ["OWN"]
        assert "coverage" not in charge.source["enriched"]

    def test_prefer_adt_overrides_the_dft(self, store: SqlStore) -> None:
        """Under prefer-ADT the context's address and coverage replace the DFT's."""
        a08 = _process(store, sample("adt_a08_update"))
        patient = Patient(mrn="MRN300415", address={"line1": "DFT street"})  # type: ignore[arg-type]
        [(charge, _)] = enrich(store, _channel("prefer-ADT"), [(_charge(
            patient=patient, coverage=[Coverage(payer_id="OWN")]), [])])
        assert charge.patient.address.line1 == "15 Cedar Bluff Ln"
        assert [c.payer_id for c in charge.coverage] == ["87726", "IL-MCD"]
        assert charge.source["enriched"]["patient.address.line1"] == f"ADT message {a08}"

    def test_off_leaves_charges_alone(self, store: SqlStore) -> None:
        """With enrichment off the charge is returned unchanged and unchecked."""
        _process(store, sample("adt_a04_register"))
        original = _charge(patient=Patient(mrn="MRN300415", birth_date=date(2000, 1, 1)))
        [(charge, findings)] = enrich(store, _channel("off"), [(original, [])])
        assert charge is original and findings == []

    def test_unknown_patient_passes_unchanged(self, store: SqlStore) -> None:
        """A charge whose MRN no ADT has mentioned is not changed and has no findings."""
        original = _charge(patient=Patient(mrn="NOBODY"))
        [(charge, findings)] = enrich(store, _channel(), [(original, [])])
        assert charge == original and findings == []


class TestDemographicMismatch:
    def test_birth_date_disagreement_holds_the_charge_without_phi(self, store: SqlStore
                                                                  ) -> None:
        """A DFT birth date that differs from the context yields a hold finding naming the
        field and the ADT message, and not the dates themselves."""
        adt = _process(store, sample("adt_a04_register"))
        patient = Patient(mrn="MRN300415", last_name="Lindqvist", birth_date=date(1991, 8, 8))
        [(_, findings)] = enrich(store, _channel(), [(_charge(patient=patient), [])])
        [finding] = findings
        assert finding.rule == MISMATCH_RULE == "demographic_mismatch"
        assert finding.severity == "hold" and finding.field == "patient.birth_date"
        assert "demographic mismatch" in finding.message and str(adt) in finding.message
        assert "1991" not in finding.message

    def test_name_and_sex_disagreements_are_each_flagged(self, store: SqlStore) -> None:
        """Different last name and sex give one finding each; case differences do not."""
        _process(store, sample("adt_a04_register"))
        patient = Patient(mrn="MRN300415", last_name="Smith", first_name="ASTRID", sex="M")
        [(_, findings)] = enrich(store, _channel("prefer-ADT"), [(_charge(patient=patient),
                                                                  [])])
        assert sorted(f.field or "" for f in findings) == ["patient.last_name", "patient.sex"]

    def test_real_dft_mapped_then_enriched(self, store: SqlStore) -> None:
        """A DFT without IN1, mapped by the shipped mapping, gets the ADT coverage; its own
        PID birth date disagrees with the ADT and is held."""
        _process(store, sample("adt_a04_register"))
        raw = dft(1, mrn="MRN300415", in1=False).replace(b"V00000001", b"V20240322004")
        mapping = load_mapping(ROOT / "mappings" / "dft_p03.yaml")
        result = mapping.apply(parse(raw), channel="dft")
        mapped = [(m.charge, list(m.findings)) for m in result.charges]
        [(charge, findings)] = enrich(store, _channel(), mapped)
        assert charge.coverage and charge.coverage[0].payer_id == "87726"
        assert {f.field for f in findings if f.rule == MISMATCH_RULE} >= {
            "patient.birth_date", "patient.last_name"}
