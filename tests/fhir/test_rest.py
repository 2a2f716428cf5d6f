"""The FHIR REST endpoint of a running node: create, update, read, conditional create,
Bundles, Prefer, auth, refusals with OperationOutcome and the journal behind them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from engine.auth.tokens import create_token
from engine.store import fhir_resources as rs
from engine.store.records import ERROR, RECEIVED
from tests.fhir.conftest import MAX_BODY, FhirNode, sample

CONTEXT = [("Patient", "patient"), ("Organization", "organization_payer"),
           ("Organization", "organization_clinic"), ("Practitioner", "practitioner"),
           ("Coverage", "coverage"), ("Encounter", "encounter")]


def expressions(outcome: dict[str, Any]) -> list[str]:
    """Every issue.expression of an OperationOutcome, flattened."""
    assert outcome["resourceType"] == "OperationOutcome"
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


class TestCreateAndRead:
    async def test_put_each_context_type_then_read_back(self, fhir_node: FhirNode) -> None:
        """PUT of every context type answers 201 with ETag and Location and reads back."""
        for rtype, name in CONTEXT:
            body = sample(name)
            resp = await fhir_node.put(f"/fhir/{rtype}/{body['id']}", body)
            assert resp.status_code == 201, resp.text
            assert resp.headers["etag"] == 'W/"1"'
            assert resp.headers["location"].endswith(f"/fhir/{rtype}/{body['id']}/_history/1")
            assert resp.headers["content-type"].startswith("application/fhir+json")
            stored = resp.json()
            assert stored["meta"]["versionId"] == "1"
            read = await fhir_node.get(f"/fhir/{rtype}/{body['id']}")
            assert read.status_code == 200
            assert read.json() == stored
        journaled = fhir_node.messages(RECEIVED)
        assert [m.message_type for m in journaled] == [t for t, _ in CONTEXT]
        assert all(m.transport == "fhir" for m in journaled)
        assert journaled[0].meta["resource_type"] == "Patient"
        assert json.loads(journaled[0].raw)["id"] == "pat-100234"

    async def test_post_chargeitem_assigns_id_and_journals(self, fhir_node: FhirNode) -> None:
        """POST of a ChargeItem gets a server id, 201, meta.versionId 1 and one journal row."""
        body = sample("chargeitem_office_visit")
        del body["id"]
        resp = await fhir_node.post("/fhir/ChargeItem", body)
        assert resp.status_code == 201, resp.text
        created = resp.json()
        assert created["id"] and created["meta"]["versionId"] == "1"
        assert resp.headers["location"].endswith(f"/fhir/ChargeItem/{created['id']}/_history/1")
        [message] = fhir_node.messages()
        assert message.status == RECEIVED and message.message_type == "ChargeItem"
        assert message.meta["id"] == created["id"]
        assert message.control_id == f"ChargeItem/{created['id']}/_history/1"

    async def test_application_json_is_accepted(self, fhir_node: FhirNode) -> None:
        """A body sent as application/json is taken like application/fhir+json."""
        resp = await fhir_node.client.post(
            "/fhir/Patient", content=json.dumps(sample("patient")).encode(),
            headers={**fhir_node.headers(), "Content-Type": "application/json"})
        assert resp.status_code == 201

    async def test_update_bumps_version_and_vread_keeps_the_old(self, fhir_node: FhirNode
                                                                 ) -> None:
        """A changed PUT makes version 2; _history/1 still answers the first version."""
        body = sample("patient")
        assert (await fhir_node.put("/fhir/Patient/pat-100234", body)).status_code == 201
        body["telecom"][0]["value"] = "(555) 010-9999"
        resp = await fhir_node.put("/fhir/Patient/pat-100234", body)
        assert resp.status_code == 200 and resp.headers["etag"] == 'W/"2"'
        old = await fhir_node.get("/fhir/Patient/pat-100234/_history/1")
        assert old.json()["telecom"][0]["value"] == "(555) 010-4471"

    async def test_if_match_on_a_stale_version_is_412(self, fhir_node: FhirNode) -> None:
        """An update whose If-Match names an old version is refused and stores nothing."""
        body = sample("patient")
        await fhir_node.put("/fhir/Patient/pat-100234", body)
        body["gender"] = "other"
        resp = await fhir_node.put("/fhir/Patient/pat-100234", body, **{"If-Match": 'W/"7"'})
        assert resp.status_code == 412
        assert rs.get_resource(fhir_node.store, "Patient", "pat-100234").version_id == 1

    async def test_put_id_must_match_url(self, fhir_node: FhirNode) -> None:
        """A PUT whose body id differs from the URL's id is a 400 naming Patient.id."""
        resp = await fhir_node.put("/fhir/Patient/someone-else", sample("patient"))
        assert resp.status_code == 400
        assert "Patient.id" in expressions(resp.json())

    async def test_read_unknown_is_404(self, fhir_node: FhirNode) -> None:
        """Reading an id never stored is a 404 OperationOutcome."""
        resp = await fhir_node.get("/fhir/Patient/nobody")
        assert resp.status_code == 404
        assert resp.json()["issue"][0]["code"] == "not-found"


class TestPrefer:
    @pytest.mark.parametrize("prefer", ["return=minimal", "return=OperationOutcome",
                                        "return=representation"])
    async def test_prefer_picks_the_body(self, fhir_node: FhirNode, prefer: str) -> None:
        """Prefer return=minimal answers no body, OperationOutcome an outcome, else the
        resource; the headers are the same."""
        resp = await fhir_node.post("/fhir/Patient", sample("patient"), Prefer=prefer)
        assert resp.status_code == 201 and resp.headers["etag"] == 'W/"1"'
        if prefer == "return=minimal":
            assert resp.content == b""
        elif prefer == "return=OperationOutcome":
            assert resp.json()["resourceType"] == "OperationOutcome"
        else:
            assert resp.json()["resourceType"] == "Patient"


class TestDuplicates:
    async def test_same_chargeitem_twice_is_one_resource_one_message(self, fhir_node: FhirNode
                                                                     ) -> None:
        """A resent ChargeItem (same identifier, same content) answers 200 with the same id
        and version, and is journaled only once."""
        body = sample("chargeitem_office_visit")
        del body["id"]
        first = await fhir_node.post("/fhir/ChargeItem", body)
        second = await fhir_node.post("/fhir/ChargeItem", body)
        assert (first.status_code, second.status_code) == (201, 200)
        assert second.json()["id"] == first.json()["id"]
        assert second.headers["etag"] == 'W/"1"'
        assert len(fhir_node.messages()) == 1

    async def test_changed_chargeitem_with_same_identifier_is_a_new_version(
            self, fhir_node: FhirNode) -> None:
        """A POST with a known identifier but new content updates that ChargeItem."""
        body = sample("chargeitem_office_visit")
        del body["id"]
        first = await fhir_node.post("/fhir/ChargeItem", body)
        body["quantity"] = {"value": 2}
        second = await fhir_node.post("/fhir/ChargeItem", body)
        assert second.status_code == 200 and second.json()["id"] == first.json()["id"]
        assert second.json()["meta"]["versionId"] == "2"
        assert len(fhir_node.messages()) == 2

    async def test_if_none_exist_match_stores_nothing(self, fhir_node: FhirNode) -> None:
        """A conditional create matching a stored Patient answers 200 with that Patient and
        writes no new version even though the body differs."""
        first = await fhir_node.post("/fhir/Patient", sample("patient"))
        other = sample("patient")
        other["name"][0]["family"] = "Changed"
        resp = await fhir_node.post(
            "/fhir/Patient", other,
            **{"If-None-Exist": "identifier=urn:oid:2.16.840.1.113883.19.5.1|100234"})
        assert resp.status_code == 200
        assert resp.json()["id"] == first.json()["id"]
        assert resp.json()["name"][0]["family"] == "Marquez"
        assert len(fhir_node.messages()) == 1


class TestRefusals:
    @pytest.mark.parametrize(("change", "expected"), [
        ({"resourceType": "Patient"}, "resourceType"),
        ({"status": None}, "ChargeItem.status"),
        ({"status": "pending"}, "ChargeItem.status"),
        ({"occurrenceDateTime": "2024-13-45T09:30:00"}, "ChargeItem.occurrenceDateTime"),
        ({"unitPrice": {"value": 12}}, "ChargeItem.unitPrice"),
        ({"code": {"coding": [{"system": 5, "code": "99214"}]}},
         "ChargeItem.code.coding[0].system"),
    ], ids=["wrong-type", "missing-status", "bad-status", "malformed-date", "unknown-element",
            "wrong-json-type"])
    async def test_invalid_chargeitem(self, fhir_node: FhirNode, change: dict[str, Any],
                                      expected: str) -> None:
        """An invalid ChargeItem is 400 with the element path in issue.expression, and the
        raw body is journaled with status ERROR."""
        body = sample("chargeitem_office_visit")
        for key, value in change.items():
            if value is None:
                body.pop(key)
            else:
                body[key] = value
        raw = json.dumps(body).encode()
        resp = await fhir_node.post("/fhir/ChargeItem", raw)
        assert resp.status_code in (400, 422), resp.text
        assert any(expected in e for e in expressions(resp.json())), resp.text
        [message] = fhir_node.messages()
        assert message.status == ERROR and message.raw == raw
        assert message.meta["http_status"] == resp.status_code
        assert rs.find_by_identifier(fhir_node.store, "ChargeItem", None, "77120-1") is None

    async def test_malformed_json_is_400_and_kept(self, fhir_node: FhirNode) -> None:
        """A body that is not JSON is 400 (code structure) and journaled raw as ERROR."""
        raw = b'{"resourceType": "ChargeItem", "status": '
        resp = await fhir_node.post("/fhir/ChargeItem", raw)
        assert resp.status_code == 400
        assert resp.json()["issue"][0]["code"] == "structure"
        [message] = fhir_node.messages()
        assert (message.status, message.raw) == (ERROR, raw)

    async def test_oversize_body_is_413(self, fhir_node: FhirNode) -> None:
        """A body larger than max_body_bytes is refused with 413 and an ERROR journal row."""
        body = sample("patient")
        body["text"]["div"] = ('<div xmlns="http://www.w3.org/1999/xhtml">'
                               + "x" * MAX_BODY + "</div>")
        resp = await fhir_node.post("/fhir/Patient", body)
        assert resp.status_code == 413
        assert resp.json()["resourceType"] == "OperationOutcome"
        [message] = fhir_node.messages()
        assert message.status == ERROR and message.meta["http_status"] == 413

    async def test_type_not_accepted_is_405_and_unknown_type_404(self, fhir_node: FhirNode
                                                                  ) -> None:
        """A FHIR type the channel does not take is 405; a name that is no type is 404."""
        observation = {"resourceType": "Observation", "status": "final",
                       "code": {"text": "weight"}}
        resp = await fhir_node.post("/fhir/Observation", observation)
        assert resp.status_code == 405
        assert resp.json()["issue"][0]["code"] == "not-supported"
        resp = await fhir_node.post("/fhir/Bogus", {"resourceType": "Bogus"})
        assert resp.status_code == 404
        assert [m.status for m in fhir_node.messages()] == [ERROR, ERROR]

    async def test_wrong_media_type_is_415(self, fhir_node: FhirNode) -> None:
        """An XML body is refused with 415."""
        resp = await fhir_node.client.post(
            "/fhir/Patient", content=b"<Patient/>",
            headers={**fhir_node.headers(), "Content-Type": "application/fhir+xml"})
        assert resp.status_code == 415

    async def test_delete_is_405(self, fhir_node: FhirNode) -> None:
        """DELETE is not offered: corrections arrive as updates."""
        resp = await fhir_node.client.delete("/fhir/Patient/x", headers=fhir_node.headers())
        assert resp.status_code == 405
        assert resp.json()["resourceType"] == "OperationOutcome"


class TestAuth:
    @pytest.mark.parametrize("authorization", [None, "Bearer cbt_not-a-real-token",
                                               "Basic dXNlcjpwYXNz"])
    async def test_without_a_valid_token_is_401(self, fhir_node: FhirNode,
                                                authorization: str | None) -> None:
        """No token, an unknown token or another scheme: 401 OperationOutcome, nothing kept."""
        headers = {"Content-Type": "application/fhir+json"}
        if authorization:
            headers["Authorization"] = authorization
        resp = await fhir_node.client.post("/fhir/Patient", content=json.dumps(
            sample("patient")).encode(), headers=headers)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.json()["issue"][0]["code"] == "login"
        meta = await fhir_node.client.get("/fhir/metadata")
        assert meta.status_code == 401
        assert fhir_node.messages() == []

    async def test_viewer_token_is_403(self, fhir_node: FhirNode) -> None:
        """A token whose role is below the channel's min_role is refused with 403."""
        viewer = create_token(fhir_node.store, "readonly", "viewer")
        resp = await fhir_node.client.get("/fhir/metadata",
                                          headers={"Authorization": f"Bearer {viewer}"})
        assert resp.status_code == 403


class TestMetadata:
    async def test_capability_statement_is_valid_and_truthful(self, fhir_node: FhirNode
                                                              ) -> None:
        """metadata is a valid R4 CapabilityStatement listing exactly the accepted types."""
        resp = await fhir_node.get("/fhir/metadata")
        assert resp.status_code == 200
        body = resp.json()
        get_fhir_model_class("CapabilityStatement").model_validate(body)
        rest = body["rest"][0]
        types = {r["type"] for r in rest["resource"]}
        assert types == {"ChargeItem", "Encounter", "Patient", "Coverage", "Practitioner",
                         "Organization", "Account"}
        assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}
        assert body["fhirVersion"] == "4.0.1"
        assert body["implementation"]["url"].endswith("/fhir")


class TestBundles:
    async def test_transaction_resolves_urn_uuid_references(self, fhir_node: FhirNode) -> None:
        """A transaction stores every entry, rewrites urn:uuid references to the new ids
        and answers a transaction-response with 201 per entry."""
        resp = await fhir_node.post("/fhir", sample("transaction_telehealth_visit"))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["type"] == "transaction-response"
        statuses = [e["response"]["status"] for e in body["entry"]]
        assert statuses == ["201 Created"] * 6
        locations = [e["response"]["location"] for e in body["entry"]]
        patient_key = locations[0].split("/_history")[0]
        charge_item = body["entry"][5]["resource"]
        assert charge_item["subject"]["reference"] == patient_key
        assert charge_item["context"]["reference"] == locations[4].split("/_history")[0]
        coverage = body["entry"][3]["resource"]
        assert coverage["beneficiary"]["reference"] == patient_key
        found = rs.find_referencing(fhir_node.store, "Coverage", "beneficiary", patient_key)
        assert [c.resource_id for c in found] == [coverage["id"]]
        assert len(fhir_node.messages(RECEIVED)) == 6

    async def test_transaction_resent_makes_nothing_new(self, fhir_node: FhirNode) -> None:
        """The same transaction sent twice stores every resource once (If-None-Exist and
        identifiers match) and journals nothing the second time."""
        bundle = sample("transaction_telehealth_visit")
        first = (await fhir_node.post("/fhir", bundle)).json()
        second = (await fhir_node.post("/fhir", bundle)).json()
        assert [e["response"]["status"] for e in second["entry"]] == ["200 OK"] * 6
        assert ([e["response"]["location"] for e in first["entry"]]
                == [e["response"]["location"] for e in second["entry"]])
        assert len(fhir_node.messages()) == 6

    async def test_transaction_with_one_bad_entry_stores_nothing(self, fhir_node: FhirNode
                                                                 ) -> None:
        """One invalid entry fails the whole transaction with its Bundle path; nothing is
        stored and the raw Bundle is journaled as ERROR."""
        bundle = sample("transaction_telehealth_visit")
        del bundle["entry"][5]["resource"]["status"]
        resp = await fhir_node.post("/fhir", bundle)
        assert resp.status_code == 400
        assert "Bundle.entry[5].resource.status" in expressions(resp.json())
        assert rs.find_by_identifier(fhir_node.store, "Patient", None, "100871") is None
        [message] = fhir_node.messages()
        assert message.status == ERROR and json.loads(message.raw) == bundle

    async def test_batch_answers_each_entry(self, fhir_node: FhirNode) -> None:
        """A batch stores the good entries and answers the bad one with its own 400."""
        bundle = sample("batch_office_visit")
        bundle["entry"][3]["resource"]["gender"] = "robot"
        resp = await fhir_node.post("/fhir", bundle)
        assert resp.status_code == 200
        body = resp.json()
        assert body["type"] == "batch-response"
        statuses = [e["response"]["status"] for e in body["entry"]]
        assert statuses == ["201 Created"] * 3 + ["400 Bad Request"] + ["201 Created"] * 4
        outcome = body["entry"][3]["response"]["outcome"]
        assert "Bundle.entry[3].resource.gender" in expressions(outcome)
        assert [m.status for m in fhir_node.messages()].count(ERROR) == 1

    async def test_bundle_of_other_type_is_400(self, fhir_node: FhirNode) -> None:
        """Only transaction and batch Bundles are accepted at the base."""
        resp = await fhir_node.post("/fhir", {"resourceType": "Bundle", "type": "collection"})
        assert resp.status_code == 400
        assert "Bundle.type" in expressions(resp.json())
