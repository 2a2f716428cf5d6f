"""FHIR resources through the whole pipeline of a real node: ChargeItems become charges
with resolved Patient, Coverage and Practitioner; resends never make a second charge;
an unresolved reference holds; entered-in-error before or after the charge went out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.charge import make_charge_id
from engine.store.records import FILTERED, HELD, PROCESSED, QUEUED, SENT
from tests.fhir.conftest import (
    CHANNEL,
    ROOT,
    FhirNode,
    Pipeline,
    sample,
    start_node,
    write_config,
)

CI_SYSTEM = "urn:oid:2.16.840.1.113883.19.5.9"


def charge_id(value: str, credit: bool = False) -> str:
    """The deterministic charge id of the ChargeItem with identifier CI_SYSTEM|value."""
    return make_charge_id(CHANNEL, "ChargeItem",
                          f"{CI_SYSTEM}|{value}" + ("#credit" if credit else ""))


def findings(node: FhirNode, cid: str) -> list[str]:
    found = node.store.get_charge(cid)
    assert found is not None, f"no charge {cid}"
    return [f.rule for f in found[2]]


async def send_context(node: FhirNode) -> None:
    """PUT the office visit's Patient, payer, clinic, Practitioner, Coverage, Encounter."""
    for rtype, name in [("Patient", "patient"), ("Organization", "organization_payer"),
                        ("Organization", "organization_clinic"),
                        ("Practitioner", "practitioner"), ("Coverage", "coverage"),
                        ("Encounter", "encounter")]:
        body = sample(name)
        resp = await node.put(f"/fhir/{rtype}/{body['id']}", body)
        assert resp.status_code == 201, resp.text


class TestChargeItemToCharge:
    async def test_transaction_bundle_yields_a_charge_with_resolved_context(
            self, fhir_pipeline: tuple[FhirNode, Pipeline]) -> None:
        """A transaction with urn:uuid references yields one charge whose patient,
        coverage (payer from the Organization) and rendering NPI come from the Bundle."""
        node, pipeline = fhir_pipeline
        resp = await node.post("/fhir", sample("transaction_telehealth_visit"))
        assert resp.status_code == 200, resp.text
        assert await pipeline.process() == 6
        assert {m.status for m in node.messages()} == {PROCESSED}
        found = node.store.get_charge(charge_id("80311-1"))
        assert found is not None
        charge, status, charge_findings, _ = found
        assert "fhir.unresolved_reference" not in [f.rule for f in charge_findings]
        assert charge.patient.mrn == "100871" and charge.patient.last_name == "Lindqvist"
        assert [(c.member_id, c.payer_id, c.payer_name) for c in charge.coverage] == [
            ("1EG4TE5MK73", "00430", "Medicare Part B (Novitas)")]
        assert charge.rendering_provider.npi == "1932102084"
        assert charge.procedure.code == "99213"
        assert str(charge.service_date) == "2024-06-03"
        assert charge.encounter.id == "V80311"
        assert charge.source["resource"].startswith("ChargeItem/")
        assert status in (QUEUED, HELD)

    async def test_separate_requests_resolve_from_the_resource_store(
            self, fhir_pipeline: tuple[FhirNode, Pipeline]) -> None:
        """A ChargeItem sent alone resolves Patient and Coverage received earlier."""
        node, pipeline = fhir_pipeline
        await send_context(node)
        resp = await node.post("/fhir/ChargeItem", sample("chargeitem_office_visit"))
        assert resp.status_code == 201
        await pipeline.process()
        charge = node.store.get_charge(charge_id("77120-1"))[0]
        assert charge.patient.mrn == "100234"
        assert charge.coverage[0].member_id == "XOF884203117"
        assert charge.coverage[0].payer_id == "00621"
        assert [d.code for d in charge.diagnoses] == ["E11.9", "I10"]

    async def test_unresolved_reference_holds_the_charge(
            self, fhir_pipeline: tuple[FhirNode, Pipeline]) -> None:
        """A ChargeItem whose Patient never arrived is HELD with a finding naming subject."""
        node, pipeline = fhir_pipeline
        resp = await node.post("/fhir/ChargeItem", sample("chargeitem_office_visit"))
        assert resp.status_code == 201
        await pipeline.process()
        cid = charge_id("77120-1")
        _, status, charge_findings, _ = node.store.get_charge(cid)
        assert status == HELD
        unresolved = [f for f in charge_findings if f.rule == "fhir.unresolved_reference"]
        assert {f.field for f in unresolved} >= {"subject", "context"}
        assert any("Patient/pat-100234" in f.message for f in unresolved)

    async def test_not_billable_is_dropped_with_a_reason(
            self, fhir_pipeline: tuple[FhirNode, Pipeline]) -> None:
        """A not-billable ChargeItem makes no charge; the message says why."""
        node, pipeline = fhir_pipeline
        await send_context(node)
        body = sample("chargeitem_office_visit")
        body["status"] = "not-billable"
        await node.post("/fhir/ChargeItem", body)
        await pipeline.process()
        last = node.messages()[-1]
        assert last.status in (PROCESSED, FILTERED) and "not billable" in (last.reason or "")
        assert last.counts.get("charges", 0) == 0
        assert node.store.get_charge(charge_id("77120-1")) is None


class TestNoSecondCharge:
    async def test_resent_and_reprocessed_chargeitem_is_one_charge(
            self, fhir_pipeline: tuple[FhirNode, Pipeline]) -> None:
        """The same ChargeItem posted twice, then changed and posted again, then its
        messages reprocessed, is still one charge."""
        node, pipeline = fhir_pipeline
        await send_context(node)
        body = sample("chargeitem_office_visit")
        del body["id"]
        await node.post("/fhir/ChargeItem", body)
        await node.post("/fhir/ChargeItem", body)
        body["note"] = [{"text": "resent by the EHR after a timeout"}]
        await node.post("/fhir/ChargeItem", body)
        await pipeline.process()
        for message in node.messages():
            node.store.requeue_message(message.id, "test")
        await pipeline.process()
        rows = node.store._query("SELECT charge_id FROM charges")
        assert [r[0] for r in rows] == [charge_id("77120-1")]


class TestCorrections:
    async def test_update_before_it_went_out_rewrites_the_charge(
            self, fhir_pipeline: tuple[FhirNode, Pipeline]) -> None:
        """A held charge (Patient missing) is rewritten by the ChargeItem's update once the
        Patient is there: same charge id, new units, no longer held."""
        node, pipeline = fhir_pipeline
        body = sample("chargeitem_office_visit")
        await node.put("/fhir/ChargeItem/ci-77120-1", body)
        await pipeline.process()
        cid = charge_id("77120-1")
        assert node.store.get_charge(cid)[1] == HELD
        await send_context(node)
        body["quantity"] = {"value": 2}
        resp = await node.put("/fhir/ChargeItem/ci-77120-1", body)
        assert resp.status_code == 200 and resp.headers["etag"] == 'W/"2"'
        await pipeline.process()
        charge, status, charge_findings, _ = node.store.get_charge(cid)
        assert status == QUEUED, charge_findings
        assert str(charge.units) == "2"
        assert "fhir.unresolved_reference" not in [f.rule for f in charge_findings]
        assert charge.source["version_id"] == "2"
        assert node.store._query("SELECT COUNT(*) FROM charges")[0][0] == 1

    async def test_entered_in_error_before_it_went_out_holds_it(
            self, fhir_pipeline: tuple[FhirNode, Pipeline]) -> None:
        """entered-in-error for a charge not yet sent holds it (never sent), no credit."""
        node, pipeline = fhir_pipeline
        await node.put("/fhir/ChargeItem/ci-77120-1", sample("chargeitem_office_visit"))
        await pipeline.process()
        await node.put("/fhir/ChargeItem/ci-77120-1", sample("chargeitem_entered_in_error"))
        await pipeline.process()
        cid = charge_id("77120-1")
        assert node.store.get_charge(cid)[1] == HELD
        assert "fhir.withdrawn" in findings(node, cid)
        assert node.store.get_charge(charge_id("77120-1", credit=True)) is None

    async def test_entered_in_error_after_it_went_out_is_a_credit(
            self, fhir_pipeline: tuple[FhirNode, Pipeline]) -> None:
        """entered-in-error after the charge was sent makes one credit (negative amount)
        with its own id; the sent charge stays as it was."""
        node, pipeline = fhir_pipeline
        await send_context(node)
        await node.put("/fhir/ChargeItem/ci-77120-1", sample("chargeitem_office_visit"))
        await pipeline.process()
        cid = charge_id("77120-1")
        status = node.store.get_charge(cid)[1]
        assert status == QUEUED, findings(node, cid)
        await pipeline.deliver()
        assert node.store.get_charge(cid)[1] == SENT
        withdrawn = sample("chargeitem_entered_in_error")
        await node.put("/fhir/ChargeItem/ci-77120-1", withdrawn)
        await node.put("/fhir/ChargeItem/ci-77120-1", withdrawn)  # a resend: no new message
        await pipeline.process()
        credit, credit_status, _, _ = node.store.get_charge(charge_id("77120-1", credit=True))
        original = node.store.get_charge(cid)
        assert credit.transaction_type == "credit"
        assert credit.amount is not None and credit.amount == -original[0].amount
        assert credit.source["credit_of"] == cid
        assert credit_status in (QUEUED, HELD)
        assert original[1] == SENT
        rows = node.store._query("SELECT COUNT(*) FROM charges")
        assert rows[0][0] == 2

    async def test_change_after_it_went_out_is_reported_not_sent(
            self, fhir_pipeline: tuple[FhirNode, Pipeline]) -> None:
        """A billable change to a sent charge leaves the sent charge alone and says so."""
        node, pipeline = fhir_pipeline
        await send_context(node)
        body: dict[str, Any] = sample("chargeitem_office_visit")
        await node.put("/fhir/ChargeItem/ci-77120-1", body)
        await pipeline.process()
        await pipeline.deliver()
        body["quantity"] = {"value": 3}
        await node.put("/fhir/ChargeItem/ci-77120-1", body)
        await pipeline.process()
        charge, status, _, _ = node.store.get_charge(charge_id("77120-1"))
        assert status == SENT and str(charge.units) == "1"
        assert "after its charge went out" in (node.messages()[-1].reason or "")


class TestShippedMapping:
    async def test_transaction_through_mappings_fhir_chargeitem(self, tmp_path: Path) -> None:
        """With the shipped mappings/fhir_chargeitem.yaml a telehealth transaction becomes
        a charge with the resolved patient, Medicare coverage, NPI and POS 02 (virtual)."""
        node = await start_node(write_config(
            tmp_path, mapping=ROOT / "mappings" / "fhir_chargeitem.yaml"))
        pipeline = Pipeline(node)
        try:
            resp = await node.post("/fhir", sample("transaction_telehealth_visit"))
            assert resp.status_code == 200
            await pipeline.process()
            charge, status, charge_findings, _ = node.store.get_charge(charge_id("80311-1"))
            assert "fhir.unresolved_reference" not in [f.rule for f in charge_findings]
            assert charge.patient.mrn == "100871"
            assert [(c.member_id, c.payer_id) for c in charge.coverage] == [
                ("1EG4TE5MK73", "00430")]
            assert charge.rendering_provider.npi == "1932102084"
            assert charge.place_of_service == "02"
            assert charge.source["control_id"].startswith("ChargeItem/")
            assert status in (QUEUED, HELD)
        finally:
            pipeline.close()
            await node.client.aclose()
            await node.node.stop()
