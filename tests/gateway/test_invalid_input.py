"""Invalid input is refused with the right status and OperationOutcome, never echoed, never half-written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.gateway.support import (
    assert_nothing_written,
    body,
    canary,
    limited_client,
    observation,
    patient,
    post_entry,
    put_entry,
    rejected,
    transaction,
)

BOM = b"\xef\xbb\xbf"


def _nested_patient(levels: int, leaf: str) -> bytes:
    """A Patient with ``levels`` nested extensions (built as text: orjson refuses to serialize that deep)."""
    link = b'{"url": "http://example.org/fhir/StructureDefinition/nested", "extension": ['
    innermost = b'{"url": "http://example.org/x", "valueString": "' + leaf.encode() + b'"}'
    chain = link * (levels - 1) + innermost + b"]}" * (levels - 1)
    return b'{"resourceType": "Patient", "extension": [' + chain + b"]}"


def _in_transaction(resource: bytes) -> bytes:
    entry = b'{"request": {"method": "POST", "url": "Patient"}, "resource": ' + resource + b"}"
    return b'{"resourceType": "Bundle", "type": "transaction", "entry": [' + entry + b"]}"


def _no_echo(response: Any, marker: str) -> None:
    assert marker not in response.text
    assert all(marker not in value for value in response.headers.values())


# -- the body is not a FHIR JSON document -------------------------------------------------------


def test_malformed_json_is_a_structure_error(client: TestClient) -> None:
    marker = canary()
    raw = b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"name": "' + marker.encode()
    response = client.post("/fhir", content=raw)
    rejected(response, 400, "structure")
    _no_echo(response, marker)
    assert_nothing_written(client)


@pytest.mark.parametrize(
    "raw", [b"[]", b'"Patient"', b"42", b"null", b""], ids=["array", "string", "number", "null", "empty"]
)
def test_json_that_is_not_an_object_is_refused(client: TestClient, raw: bytes) -> None:
    rejected(client.post("/fhir", content=raw), 400, "structure")
    rejected(client.post("/fhir/Patient", content=raw), 400, "structure")
    assert_nothing_written(client)


def test_post_to_base_takes_only_a_bundle(client: TestClient) -> None:
    marker = canary()
    response = client.post("/fhir", content=body(patient(name=[{"family": marker}])))
    rejected(response, 400, "invalid", "Bundle")
    _no_echo(response, marker)
    assert_nothing_written(client)


def test_unknown_resource_type_inside_an_entry(client: TestClient) -> None:
    marker = canary()
    bundle = transaction(
        post_entry(patient()),
        {
            "resource": {"resourceType": marker, "name": [{"family": marker}]},
            "request": {"method": "POST", "url": "Patient"},
        },
        {"resource": {"resourceType": "Pateint"}, "request": {"method": "POST", "url": "Pateint"}},
    )
    response = client.post("/fhir", content=body(bundle))
    rejected(response, 400, "invalid", "Bundle.entry[1].resource.resourceType")
    rejected(response, 400, "not-supported", "Bundle.entry[2].request.url")
    _no_echo(response, marker)
    assert_nothing_written(client)


def test_resource_type_in_the_url_that_does_not_exist_is_404(client: TestClient) -> None:
    rejected(client.get("/fhir/Foo"), 404, "not-supported")
    rejected(client.get("/fhir/Foo/123"), 404, "not-supported")
    rejected(client.post("/fhir/Foo", content=body({"resourceType": "Foo"})), 404, "not-supported")
    rejected(client.put("/fhir/Foo/1", content=body({"resourceType": "Foo", "id": "1"})), 404, "not-supported")
    assert_nothing_written(client)


def test_body_of_another_type_than_the_url_is_refused(client: TestClient) -> None:
    rejected(client.post("/fhir/Patient", content=body(observation())), 400, "invalid", "Patient.resourceType")
    assert_nothing_written(client)


# -- Bundle-level rules ------------------------------------------------------------------------


def test_missing_bundle_type(client: TestClient) -> None:
    bundle = transaction(post_entry(patient()))
    del bundle["type"]
    rejected(client.post("/fhir", content=body(bundle)), 400, "required", "Bundle.type")
    assert_nothing_written(client)


def test_collection_bundle_is_not_a_transaction(client: TestClient) -> None:
    bundle = transaction(post_entry(patient()), bundle_type="collection")
    rejected(client.post("/fhir", content=body(bundle)), 400, "not-supported", "Bundle.type")
    assert_nothing_written(client)


def test_duplicate_full_urls_name_the_second_entry(client: TestClient) -> None:
    url = "urn:uuid:5a1d1c02-3c2b-4b8e-9b4c-0d8b1a3e5f11"
    bundle = transaction(
        post_entry(patient(), url), post_entry(observation(), "urn:uuid:other"), post_entry(patient(), url)
    )
    response = client.post("/fhir", content=body(bundle))
    issue = rejected(response, 400, "duplicate", "Bundle.entry[2].fullUrl")
    assert "Bundle.entry[0].fullUrl" not in issue["expression"]
    assert_nothing_written(client)


def test_same_resource_changed_twice_in_one_transaction(client: TestClient) -> None:
    bundle = transaction(
        put_entry(patient(id="x"), "Patient/x"),
        put_entry(patient(id="x", gender="female"), "Patient/x"),
    )
    rejected(client.post("/fhir", content=body(bundle)), 400, "duplicate", "Bundle.entry[1].request.url")
    assert_nothing_written(client)


def test_same_resource_put_and_deleted_in_one_transaction(client: TestClient) -> None:
    bundle = transaction(put_entry(patient(id="x"), "Patient/x"), {"request": {"method": "DELETE", "url": "Patient/x"}})
    rejected(client.post("/fhir", content=body(bundle)), 400, "duplicate", "Bundle.entry[1].request.url")
    assert_nothing_written(client)


def test_unresolvable_urn_uuid_reference(client: TestClient) -> None:
    pat = "urn:uuid:0b7a6a3e-8c5d-4a8e-9f51-2a6f0c1d9e01"
    dangling = f"urn:uuid:{canary()[11:]}"
    bundle = transaction(
        post_entry(patient(), pat),
        post_entry(observation(subject={"reference": pat})),
        post_entry(observation(subject={"reference": pat}, performer=[{"reference": pat}, {"reference": dangling}])),
    )
    response = client.post("/fhir", content=body(bundle))
    rejected(response, 400, "not-found", "Bundle.entry[2].resource.performer[1].reference")
    _no_echo(response, dangling)
    assert_nothing_written(client)


def test_too_many_entries_is_413(tmp_path: Path) -> None:
    with limited_client(tmp_path, max_entries=2) as client:
        bundle = transaction(post_entry(patient()), post_entry(patient()), post_entry(patient()))
        rejected(client.post("/fhir", content=body(bundle)), 413, "too-long")
        assert_nothing_written(client)


# -- resource content --------------------------------------------------------------------------


def test_invalid_date_names_the_element(client: TestClient) -> None:
    marker = canary()
    bundle = transaction(post_entry(patient()), post_entry(patient(birthDate="1990-13-45", name=[{"family": marker}])))
    response = client.post("/fhir", content=body(bundle))
    rejected(response, 400, "value", "Bundle.entry[1].resource.birthDate")
    _no_echo(response, marker)
    response = client.post("/fhir/Patient", content=body(patient(birthDate=marker)))
    rejected(response, 400, "value", "Patient.birthDate")
    _no_echo(response, marker)
    assert_nothing_written(client)


def test_required_binding_violation_is_code_invalid(client: TestClient) -> None:
    marker = canary()
    bundle = transaction(post_entry(patient()), post_entry(observation()), post_entry(observation(status="bogus")))
    rejected(client.post("/fhir", content=body(bundle)), 400, "code-invalid", "Bundle.entry[2].resource.status")
    response = client.post("/fhir/Observation", content=body(observation(status=marker)))
    rejected(response, 400, "code-invalid", "Observation.status")
    _no_echo(response, marker)
    assert_nothing_written(client)


def test_missing_required_element_is_required(client: TestClient) -> None:
    doc = observation()
    del doc["status"]
    rejected(client.post("/fhir/Observation", content=body(doc)), 400, "required", "Observation.status")
    doc = observation()
    del doc["code"]
    rejected(client.post("/fhir/Observation", content=body(doc)), 400, "required", "Observation.code")
    assert_nothing_written(client)


def test_unknown_element_is_a_structure_error(client: TestClient) -> None:
    bundle = transaction(post_entry(patient(birthdate="1990-01-01")))
    rejected(client.post("/fhir", content=body(bundle)), 400, "structure", "Bundle.entry[0].resource.birthdate")
    assert_nothing_written(client)


def test_contained_resource_of_unknown_type_is_400_not_500(client: TestClient) -> None:
    marker = canary()
    doc = patient(contained=[{"resourceType": marker, "id": "c1"}])
    response = client.post("/fhir/Patient", content=body(doc))
    rejected(response, 400, "invalid", "Patient.contained[0].resourceType")
    _no_echo(response, marker)
    assert_nothing_written(client)


def test_put_body_id_must_match_the_url(client: TestClient) -> None:
    marker = canary()[:60]
    response = client.put("/fhir/Patient/abc", content=body(patient(id=marker)))
    rejected(response, 400, "invalid", "Patient.id")
    _no_echo(response, marker)
    rejected(client.put("/fhir/Patient/abc", content=body(patient())), 400, "required", "Patient.id")
    bundle = transaction(put_entry(patient(), "Patient/abc"))
    rejected(client.post("/fhir", content=body(bundle)), 400, "required", "Bundle.entry[0].resource.id")
    assert_nothing_written(client)


def test_invalid_etag_names_if_match(client: TestClient) -> None:
    marker = canary()
    bundle = transaction(
        {"resource": patient(id="x"), "request": {"method": "PUT", "url": "Patient/x", "ifMatch": marker}}
    )
    response = client.post("/fhir", content=body(bundle))
    rejected(response, 400, "invalid", "Bundle.entry[0].request.ifMatch")
    _no_echo(response, marker)
    assert_nothing_written(client)


# -- limits ------------------------------------------------------------------------------------


@pytest.fixture
def small_client(tmp_path: Path) -> Iterator[TestClient]:
    with limited_client(tmp_path, max_body_bytes=2048) as client:
        yield client


def test_oversized_body_is_413(small_client: TestClient) -> None:
    marker = canary()
    doc = patient(name=[{"family": marker, "given": ["x" * 4096]}])
    response = small_client.post("/fhir/Patient", content=body(doc))
    rejected(response, 413, "too-long")
    _no_echo(response, marker)
    assert_nothing_written(small_client)


def test_oversized_streamed_body_without_length_is_413(small_client: TestClient) -> None:
    raw = body(transaction(post_entry(patient(name=[{"family": "x" * 4096}]))))
    chunks = iter([raw[i : i + 512] for i in range(0, len(raw), 512)])
    response = small_client.post("/fhir", content=chunks)
    rejected(response, 413, "too-long")
    assert_nothing_written(small_client)


def test_deeply_nested_document_is_413(client: TestClient) -> None:
    marker = canary()
    raw = _nested_patient(200, marker)
    response = client.post("/fhir", content=_in_transaction(raw))
    rejected(response, 413, "too-long")
    _no_echo(response, marker)
    rejected(client.post("/fhir/Patient", content=raw), 413, "too-long")
    assert_nothing_written(client)


def test_document_too_deep_for_the_parser_is_413_not_500(client: TestClient) -> None:
    raw = _nested_patient(5000, "x")
    rejected(client.post("/fhir/Patient", content=raw), 413, "too-long")
    rejected(client.post("/fhir", content=_in_transaction(raw)), 413, "too-long")
    assert_nothing_written(client)


# -- media types -------------------------------------------------------------------------------


def test_utf8_bom_is_accepted(client: TestClient) -> None:
    created = client.post("/fhir/Patient", content=BOM + body(patient()))
    assert created.status_code == 201, created.text
    reply = client.post("/fhir", content=BOM + body(transaction(post_entry(patient()))))
    assert reply.status_code == 200, reply.text
    assert reply.json()["entry"][0]["response"]["status"] == "201 Created"


def test_xml_body_is_415(client: TestClient) -> None:
    headers = {"Content-Type": "application/fhir+xml"}
    xml = b'<Patient xmlns="http://hl7.org/fhir"><birthDate value="1990-01-01"/></Patient>'
    rejected(client.post("/fhir/Patient", content=xml, headers=headers), 415, "not-supported")
    rejected(client.post("/fhir", content=xml, headers={"Content-Type": "application/xml"}), 415, "not-supported")
    json_as_xml = body(transaction(post_entry(patient())))
    rejected(
        client.post("/fhir", content=json_as_xml, headers={"Content-Type": "application/xml"}), 415, "not-supported"
    )
    assert_nothing_written(client)


def test_xml_accept_is_406(client: TestClient) -> None:
    headers = {"Accept": "application/fhir+xml"}
    rejected(client.post("/fhir/Patient", content=body(patient()), headers=headers), 406, "not-supported")
    rejected(
        client.post("/fhir", content=body(transaction(post_entry(patient()))), headers=headers), 406, "not-supported"
    )
    rejected(client.get("/fhir/metadata", headers=headers), 406, "not-supported")
    rejected(client.get("/fhir/Patient", params={"_format": "xml"}), 406, "not-supported")
    assert_nothing_written(client)


def test_json_accept_variants_are_fine(client: TestClient) -> None:
    for accept in ("application/json", "application/fhir+json; fhirVersion=4.0", "*/*", "text/html, */*;q=0.8"):
        assert client.get("/fhir/metadata", headers={"Accept": accept}).status_code == 200, accept


# -- atomicity ---------------------------------------------------------------------------------


def test_one_invalid_entry_writes_nothing(client: TestClient) -> None:
    pat = "urn:uuid:6f0a1c33-0c57-4d4c-9b0e-4d8a8a4b2c10"
    entries = [post_entry(patient(), pat)] + [post_entry(observation(subject={"reference": pat})) for _ in range(5)]
    entries[4]["resource"]["status"] = "bogus"
    response = client.post("/fhir", content=body(transaction(*entries)))
    rejected(response, 400, "code-invalid", "Bundle.entry[4].resource.status")
    assert len(response.json()["issue"]) == 1
    assert_nothing_written(client)


def test_transaction_failing_at_apply_time_writes_nothing(client: TestClient) -> None:
    bundle = transaction(
        post_entry(patient()),
        put_entry(patient(id="p2"), "Patient/p2"),
        {"resource": patient(id="p3"), "request": {"method": "PUT", "url": "Patient/p3", "ifMatch": 'W/"3"'}},
    )
    rejected(client.post("/fhir", content=body(bundle)), 412, "conflict", "Bundle.entry[2].request.ifMatch")
    assert_nothing_written(client)


def test_batch_entries_fail_alone(client: TestClient) -> None:
    bundle = transaction(post_entry(patient()), post_entry(patient(birthDate="1990-13-45")), bundle_type="batch")
    response = client.post("/fhir", content=body(bundle))
    assert response.status_code == 200, response.text
    first, second = response.json()["entry"]
    assert first["response"]["status"] == "201 Created"
    assert second["response"]["status"] == "400 Bad Request"
    issues = second["response"]["outcome"]["issue"]
    assert any(i["code"] == "value" and "Bundle.entry[1].resource.birthDate" in i["expression"] for i in issues)


# -- PHI never comes back ----------------------------------------------------------------------


def test_rejections_never_echo_input_values(client: TestClient) -> None:
    marker = canary()
    bad_values = [
        patient(birthDate=marker),
        patient(gender=marker),
        patient(active=marker),
        patient(name=[{"family": "Doe", "period": {"start": marker}}]),
        patient(telecom=[{"system": "phone", "value": marker, "rank": 0}]),
        patient(multipleBirthBoolean=True, multipleBirthInteger=2, name=[{"family": marker}]),
        patient(photo=[{"data": marker}]),
        observation(status=marker),
        observation(valueQuantity={"value": marker}),
    ]
    for index, doc in enumerate(bad_values):
        response = client.post("/fhir", content=body(transaction(post_entry(doc))))
        assert response.status_code == 400, (index, response.text)
        _no_echo(response, marker)
        response = client.post(f"/fhir/{doc['resourceType']}", content=body(doc))
        assert response.status_code == 400, (index, response.text)
        _no_echo(response, marker)
    assert_nothing_written(client)
