"""The official HL7 R4 example Bundles, posted the way an EMR would post them."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.data import official
from tests.gateway.support import assert_nothing_written, body, entry_outcome, lake_rows, rejected, versions_count

ID_SYSTEM = "http:/example.org/fhir/ids"  # sic: the example's own system


def _without_operation_and_reads(bundle: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(bundle)
    out["entry"] = [e for e in out["entry"] if e["request"]["method"] != "GET" and "$" not in e["request"]["url"]]
    return out


def _status(entry: dict[str, Any]) -> int:
    return int(entry["response"]["status"].split()[0])


def _location(entry: dict[str, Any]) -> tuple[str, str, int]:
    rtype, rid, history, version = entry["response"]["location"].split("/")
    assert history == "_history"
    return rtype, rid, int(version)


def _put_patient(client: TestClient, rid: str, **fields: Any) -> None:
    doc = {"resourceType": "Patient", "id": rid, **fields}
    response = client.put(f"/fhir/Patient/{rid}", content=body(doc))
    assert response.status_code in (200, 201), response.text


# -- Bundle-bundle-transaction.json ------------------------------------------------------------


def test_transaction_example_as_is_is_rejected_atomically(client: TestClient) -> None:
    response = client.post("/fhir", content=body(official("Bundle-bundle-transaction.json")))
    issue = rejected(response, 400, "not-supported", "Bundle.entry[7].request.url")
    assert issue["severity"] == "error"
    assert_nothing_written(client)


def test_transaction_example_fails_on_if_match_of_a_missing_resource(client: TestClient) -> None:
    bundle = _without_operation_and_reads(official("Bundle-bundle-transaction.json"))
    assert [e["request"]["url"] for e in bundle["entry"]][4] == "Patient/123a"
    response = client.post("/fhir", content=body(bundle))
    rejected(response, 412, "conflict", "Bundle.entry[4].request.ifMatch")
    assert_nothing_written(client)


def test_transaction_example_succeeds_once_its_preconditions_hold(client: TestClient) -> None:
    _put_patient(client, "123a", gender="male")
    _put_patient(client, "123a", gender="male", active=True)  # now at version 2, as ifMatch expects
    existing = client.post(
        "/fhir/Patient",
        content=body({"resourceType": "Patient", "identifier": [{"system": ID_SYSTEM, "value": "234234"}]}),
    )
    assert existing.status_code == 201
    existing_id = existing.json()["id"]
    before = versions_count(client)

    bundle = _without_operation_and_reads(official("Bundle-bundle-transaction.json"))
    response = client.post("/fhir", content=body(bundle))
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["type"] == "transaction-response"
    entries = reply["entry"]
    assert len(entries) == len(bundle["entry"]) == 7

    created, conditional_create, put_new, conditional_put, put_if_match, delete, conditional_delete = entries
    assert _status(created) == 201 and _location(created)[0::2] == ("Patient", 1)
    assert _status(conditional_create) == 200
    assert _location(conditional_create) == ("Patient", existing_id, 1)
    assert _status(put_new) == 201 and _location(put_new) == ("Patient", "123", 1)
    assert _status(conditional_put) == 201
    new_id = _location(conditional_put)[1]
    assert new_id not in ("123", "123a", existing_id)
    assert _status(put_if_match) == 200 and _location(put_if_match) == ("Patient", "123a", 3)
    assert _status(delete) == 204 and _status(conditional_delete) == 204
    for entry in (created, put_new, conditional_put, put_if_match):
        assert entry["resource"]["meta"]["versionId"] == str(_location(entry)[2])

    assert versions_count(client) == before + 4  # two deletes of absent resources write nothing
    found = client.get("/fhir/Patient", params={"identifier": f"{ID_SYSTEM}|456456"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [new_id]
    assert client.get("/fhir/Patient/123a").headers["etag"] == 'W/"3"'
    assert lake_rows(client)["patient"] == versions_count(client)


def test_transaction_example_conditional_update_then_updates_its_match(client: TestClient) -> None:
    _put_patient(client, "123a")
    _put_patient(client, "123a")
    bundle = _without_operation_and_reads(official("Bundle-bundle-transaction.json"))
    first = client.post("/fhir", content=body(bundle)).json()
    conditional_id = _location(first["entry"][3])[1]
    bundle["entry"][4]["request"]["ifMatch"] = 'W/"3"'
    second = client.post("/fhir", content=body(bundle))
    assert second.status_code == 200, second.text
    entries = second.json()["entry"]
    assert _status(entries[1]) == 200  # the identifier created the first time now matches
    assert _status(entries[3]) == 200 and _location(entries[3]) == ("Patient", conditional_id, 2)
    assert _status(entries[2]) == 200 and _location(entries[2]) == ("Patient", "123", 2)


# -- batch requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Bundle-bundle-request-medsallergies.json", "Bundle-bundle-request-simplesummary.json"]
)
def test_batch_request_examples_answer_every_entry(client: TestClient, name: str) -> None:
    bundle = official(name)
    response = client.post("/fhir", content=body(bundle))
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["type"] == "batch-response"
    entries = reply["entry"]
    sent = bundle["entry"]
    assert isinstance(sent, list) and len(entries) == len(sent)
    entry_outcome(entries[0], 404, "not-found")
    for request, entry in zip(sent[1:], entries[1:], strict=True):
        assert _status(entry) == 200, entry
        searchset = entry["resource"]
        assert searchset["type"] == "searchset" and searchset["total"] == 0
        supported = ("patient", "code", "date")  # everything these examples use is supported now
        ignored = sorted(
            name for name, _ in parse_qsl(urlsplit(request["request"]["url"]).query) if name not in supported
        )
        warnings = [i for e in searchset["entry"] if e["search"]["mode"] == "outcome" for i in e["resource"]["issue"]]
        assert all(i["severity"] == "warning" and i["code"] == "not-supported" for i in warnings)
        assert len(warnings) == len(ignored)
        assert all(any(f"'{n}'" in i["diagnostics"] for i in warnings) for n in ignored)
    assert versions_count(client) == 0


def test_batch_list_searches_warn_that_list_was_ignored(client: TestClient) -> None:
    entries = client.post("/fhir", content=body(official("Bundle-bundle-request-medsallergies.json"))).json()["entry"]
    for entry in entries[1:4]:
        outcome = next(e["resource"] for e in entry["resource"]["entry"] if e["search"]["mode"] == "outcome")
        assert any(i["code"] == "not-supported" and "_list" in i["diagnostics"] for i in outcome["issue"])


def test_batch_request_example_finds_the_patient_once_present(client: TestClient) -> None:
    assert client.put("/fhir/Patient/example", content=body(official("Patient-example.json"))).status_code == 201
    assert (
        client.put("/fhir/Observation/example", content=body(official("Observation-example.json"))).status_code == 201
    )
    entries = client.post("/fhir", content=body(official("Bundle-bundle-request-simplesummary.json"))).json()["entry"]
    assert _status(entries[0]) == 200
    assert entries[0]["resource"]["id"] == "example" and entries[0]["response"]["etag"] == 'W/"1"'
    observations = entries[3]["resource"]  # code 55284-4 since 2015: the example is 29463-7 of 2016
    assert [e["resource"]["id"] for e in observations["entry"] if e["search"]["mode"] == "match"] == []
    found = client.get("/fhir/Observation?patient=example&code=http://loinc.org|29463-7&date=ge2015-01-01").json()
    assert [e["resource"]["id"] for e in found["entry"] if e["search"]["mode"] == "match"] == ["example"]


# -- Bundle-xds.json and Bundle-hla-1.json -----------------------------------------------------


def _assigned(reply: dict[str, Any], bundle: dict[str, Any]) -> dict[str, str]:
    """fullUrl in the request -> Type/id assigned by the server."""
    assert len(reply["entry"]) == len(bundle["entry"])
    out = {}
    for sent, got in zip(bundle["entry"], reply["entry"], strict=True):
        assert _status(got) == 201, got
        rtype, rid, _ = _location(got)
        out[sent["fullUrl"]] = f"{rtype}/{rid}"
    return out


def test_xds_transaction_rewrites_references_to_assigned_ids(client: TestClient) -> None:
    bundle = official("Bundle-xds.json")
    response = client.post("/fhir", content=body(bundle))
    assert response.status_code == 200, response.text
    assigned = _assigned(response.json(), bundle)
    patient_ref = assigned["http://localhost:9556/svc/fhir/Patient/a2"]
    assert patient_ref != "Patient/a2"
    doc_ref = client.get(f"/fhir/{assigned[bundle['entry'][0]['fullUrl']]}").json()  # type: ignore[index]
    assert doc_ref["subject"]["reference"] == patient_ref
    authors = sorted(a["reference"] for a in doc_ref["author"])
    assert authors == sorted(assigned[f"http://localhost:9556/svc/fhir/Practitioner/{p}"] for p in ("a3", "a4"))
    patient = client.get(f"/fhir/{doc_ref['subject']['reference']}")
    assert patient.status_code == 200 and patient.json()["name"][0]["family"] == "Doe"
    binary = client.get(
        f"/fhir/{assigned['http://localhost:9556/svc/fhir/Binary/1e404af3-077f-4bee-b7a6-a9be97e1ce32']}"
    )
    assert binary.status_code == 200 and binary.json()["data"] == "YXNkYXNkYXNkYXNkYXNk"


def test_hla_transaction_rewrites_urn_uuid_references(client: TestClient) -> None:
    bundle = official("Bundle-hla-1.json")
    response = client.post("/fhir", content=body(bundle))
    assert response.status_code == 200, response.text
    assigned = _assigned(response.json(), bundle)
    report = client.get(f"/fhir/{assigned[bundle['entry'][0]['fullUrl']]}").json()  # type: ignore[index]
    results = [r["reference"] for r in report["result"]]
    assert results and all(not r.startswith("urn:") for r in results)
    assert set(results) <= set(assigned.values())
    observation = client.get(f"/fhir/{results[0]}")
    assert observation.status_code == 200 and observation.json()["resourceType"] == "Observation"
    assert "urn:uuid:" not in response.text.replace('"fullUrl"', "")
    rows = lake_rows(client)
    assert rows["diagnosticreport"] == 1 and rows["observation"] == 9


def test_transaction_example_with_its_reads_fails_on_the_missing_read(client: TestClient) -> None:
    _put_patient(client, "123a")
    _put_patient(client, "123a")
    before = versions_count(client)
    bundle = official("Bundle-bundle-transaction.json")
    entries = bundle["entry"]
    assert isinstance(entries, list)
    bundle["entry"] = [e for e in entries if "$" not in e["request"]["url"]]
    response = client.post("/fhir", content=body(bundle))
    rejected(response, 404, "not-found", "Bundle.entry[8].request.url")  # GET Patient/12334
    assert versions_count(client) == before
    _put_patient(client, "12334")
    response = client.post("/fhir", content=body(bundle))
    assert response.status_code == 200, response.text
    search, read = response.json()["entry"][7:]
    assert search["resource"]["type"] == "searchset"  # name= is ignored leniently, with a warning
    assert read["resource"]["id"] == "12334" and _status(read) == 200
