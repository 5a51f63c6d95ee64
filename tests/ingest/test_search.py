"""Search parameters of the US Core set against Synthea patients.

Every expected match set is computed here from the submitted bundles with a
small evaluator of the FHIR search rules, independent of the server's index.
"""

from __future__ import annotations

import calendar
import unicodedata
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.fixtures.app import make_settings, open_client
from tests.fixtures.data import synthea_paths

Doc = dict[str, Any]
BUNDLES = ("Ardith_Welch", "Alejandro_Riojas", "Bill_Reinger", "Brett_Gottlieb")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, list[Doc]]]:
    """A gateway holding four Synthea patients; the stored resources as the server numbered them."""
    stored: list[Doc] = []
    with open_client(make_settings(tmp_path_factory.mktemp("search") / "data")) as client:
        for path in [p for p in synthea_paths() if p.name.startswith(BUNDLES)]:
            bundle = orjson.loads(path.read_bytes())
            response = client.post("/fhir", content=path.read_bytes())
            assert response.status_code == 200, response.text
            ids = {
                e["fullUrl"]: e["response"]["location"].split("/_history")[0] for e in _pairs(bundle, answer(response))
            }
            for entry in bundle["entry"]:
                doc = _renumber(entry["resource"], ids)
                doc["id"] = ids[entry["fullUrl"]].split("/")[1]
                stored.append(doc)
        stored += _post_crafted(client)
        yield client, stored


def _post_crafted(client: TestClient) -> list[Doc]:
    """Values Synthea lacks: periods over several days or open, partial dates, accents."""
    pat: Doc = {
        "resourceType": "Patient",
        "gender": "other",
        "birthDate": "1970",
        "name": [{"family": "Ñúñez-Ortiz", "given": ["Zoë"]}],
    }
    periods = [{"start": "2019-12-30", "end": "2020-01-05T10:00:00Z"}, {"start": "2020-02-01"}, {"end": "2019-06-01"}]
    docs: list[Doc] = [pat, {"resourceType": "Patient", "birthDate": "1980-05", "gender": "unknown"}]
    docs += [
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "IMP"},
            "period": p,
            "subject": {"reference": "urn:uuid:p0"},
        }
        for p in periods
    ]
    docs.append(
        {
            "resourceType": "Condition",
            "subject": {"reference": "urn:uuid:p0"},
            "onsetPeriod": periods[0],
            "code": {"text": "x"},
        }
    )
    entries = [
        {"fullUrl": f"urn:uuid:p{i}", "resource": d, "request": {"method": "POST", "url": d["resourceType"]}}
        for i, d in enumerate(docs)
    ]
    response = client.post(
        "/fhir", content=orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    )
    assert response.status_code == 200, response.text
    ids = {
        e["fullUrl"]: r["response"]["location"].split("/_history")[0]
        for e, r in zip(entries, response.json()["entry"], strict=True)
    }
    out = []
    for entry in entries:
        doc = _renumber(entry["resource"], ids)
        doc["id"] = ids[entry["fullUrl"]].split("/")[1]
        out.append(doc)
    return out


def _pairs(bundle: Doc, answer: Doc) -> Iterator[Doc]:
    for sent, got in zip(bundle["entry"], answer["entry"], strict=True):
        yield {"fullUrl": sent["fullUrl"], "response": got["response"]}


def answer(response: Any) -> Doc:
    doc: Doc = response.json()
    return doc


def _renumber(doc: Any, ids: dict[str, str]) -> Any:
    """The resource as the server stores it: ``urn:uuid`` references replaced by ``Type/id``."""
    text = orjson.dumps(doc).decode()
    for full_url, ref in ids.items():
        text = text.replace(f'"{full_url}"', f'"{ref}"')
    return orjson.loads(text)


def search(client: TestClient, query: str) -> tuple[list[str], Doc]:
    """Ids of every match, following next links."""
    ids: list[str] = []
    url: str | None = f"/fhir/{query}"
    last: Doc = {}
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.text
        last = response.json()
        ids += [e["resource"]["id"] for e in last.get("entry", []) if e["search"]["mode"] == "match"]
        url = next((link["url"] for link in last["link"] if link["relation"] == "next"), None)
        url = url.removeprefix("http://testserver") if url else None
    return ids, last


def expect(stored: list[Doc], rtype: str, predicate: Callable[[Doc], bool]) -> set[str]:
    return {d["id"] for d in stored if d["resourceType"] == rtype and predicate(d)}


# -- an independent evaluator of the search rules used below --------------------------------------


def values(doc: Any, path: str) -> list[Any]:
    out = [doc]
    for part in path.split("."):
        nxt: list[Any] = []
        for item in out:
            if isinstance(item, dict) and part in item:
                value = item[part]
                nxt += value if isinstance(value, list) else [value]
        out = nxt
    return out


def codings(doc: Doc, path: str) -> list[tuple[str | None, str]]:
    found = []
    for value in values(doc, path):
        if isinstance(value, str):
            found.append((None, value))
        for coding in value.get("coding", []) if isinstance(value, dict) else []:
            found.append((coding.get("system"), coding["code"]))
        if isinstance(value, dict) and "code" in value and "coding" not in value:
            found.append((value.get("system"), value["code"]))
    return found


def has_code(doc: Doc, path: str, system: str | None, code: str) -> bool:
    return any(c == code and (system is None or s == system) for s, c in codings(doc, path))


def day_span(text: str) -> tuple[date, date]:
    year = int(text[:4])
    if len(text) == 4:
        return date(year, 1, 1), date(year, 12, 31)
    month = int(text[5:7])
    if len(text) == 7:
        return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
    day = date(year, month, int(text[8:10]))
    return day, day


def spans(doc: Doc, paths: tuple[str, ...]) -> list[tuple[date, date]]:
    out = []
    for path in paths:
        for value in values(doc, path):
            if isinstance(value, str):
                out.append(day_span(value))
            elif isinstance(value, dict):
                low = day_span(value["start"])[0] if "start" in value else date.min
                high = day_span(value["end"])[1] if "end" in value else date.max
                out.append((low, high))
    return out


def date_matches(doc: Doc, paths: tuple[str, ...], prefix: str, text: str) -> bool:
    low, high = day_span(text)
    tests = {
        "eq": lambda s, e: s >= low and e <= high,
        "ge": lambda s, e: e >= low,
        "gt": lambda s, e: e > high,
        "le": lambda s, e: s <= high,
        "lt": lambda s, e: s < low,
    }
    return any(tests[prefix](s, e) for s, e in spans(doc, paths))


def fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return " ".join("".join(c for c in text if not unicodedata.combining(c)).casefold().split())


def starts(doc: Doc, paths: tuple[str, ...], query: str) -> bool:
    wanted = fold(query)
    found = [fold(v) for p in paths for v in values(doc, p) if isinstance(v, str)]
    return any(v.startswith(wanted) or any(w.startswith(wanted) for w in v.split(" ")) for v in found)


def refers(doc: Doc, path: str, target: str) -> bool:
    return any(isinstance(v, dict) and v.get("reference") == target for v in values(doc, path))


# -- the cases ------------------------------------------------------------------------------------

_OBS_DATE = ("effectiveDateTime", "effectivePeriod", "effectiveInstant")


def _first(stored: list[Doc], rtype: str) -> Doc:
    return next(d for d in stored if d["resourceType"] == rtype)


def token_cases(stored: list[Doc]) -> list[tuple[str, set[str]]]:
    obs = _first(stored, "Observation")
    system, code = obs["code"]["coding"][0]["system"], obs["code"]["coding"][0]["code"]
    cond = _first(stored, "Condition")
    cond_code = cond["code"]["coding"][0]["code"]
    vaccine = _first(stored, "Immunization")["vaccineCode"]["coding"][0]["code"]
    return [
        (
            f"Observation?code={system}|{code}",
            expect(stored, "Observation", lambda d: has_code(d, "code", system, code)),
        ),
        (f"Observation?code={code}", expect(stored, "Observation", lambda d: has_code(d, "code", None, code))),
        ("Observation?code=http://example.org|" + code, set()),
        (
            "Observation?category=vital-signs",
            expect(stored, "Observation", lambda d: has_code(d, "category", None, "vital-signs")),
        ),
        (
            "Observation?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            expect(stored, "Observation", lambda d: has_code(d, "category", None, "laboratory")),
        ),
        ("Observation?status=final", expect(stored, "Observation", lambda d: d.get("status") == "final")),
        (
            "Condition?clinical-status=active",
            expect(stored, "Condition", lambda d: has_code(d, "clinicalStatus", None, "active")),
        ),
        (f"Condition?code={cond_code}", expect(stored, "Condition", lambda d: has_code(d, "code", None, cond_code))),
        (
            f"Immunization?vaccine-code={vaccine}",
            expect(stored, "Immunization", lambda d: has_code(d, "vaccineCode", None, vaccine)),
        ),
        ("Patient?gender=female", expect(stored, "Patient", lambda d: d.get("gender") == "female")),
        ("Encounter?class=AMB", expect(stored, "Encounter", lambda d: has_code(d, "class", None, "AMB"))),
        ("MedicationRequest?intent=order", expect(stored, "MedicationRequest", lambda d: d.get("intent") == "order")),
        (
            "AllergyIntolerance?clinical-status=active",
            expect(stored, "AllergyIntolerance", lambda d: has_code(d, "clinicalStatus", None, "active")),
        ),
        (
            "Observation?value-concept:missing=false",
            expect(stored, "Observation", lambda d: "valueCodeableConcept" in d),
        ),
        (
            "Observation?value-concept:missing=true",
            expect(stored, "Observation", lambda d: "valueCodeableConcept" not in d),
        ),
        (
            "DiagnosticReport?category=LAB",
            expect(stored, "DiagnosticReport", lambda d: has_code(d, "category", None, "LAB")),
        ),
    ]


def date_cases(stored: list[Doc]) -> list[tuple[str, set[str]]]:
    cases = []
    for rtype, param, paths in (
        ("Observation", "date", _OBS_DATE),
        ("Encounter", "date", ("period",)),
        ("Condition", "onset-date", ("onsetDateTime", "onsetPeriod")),
        ("Immunization", "date", ("occurrenceDateTime",)),
        ("Procedure", "date", ("performedDateTime", "performedPeriod")),
        ("MedicationRequest", "authoredon", ("authoredOn",)),
        ("Patient", "birthdate", ("birthDate",)),
    ):
        sample = spans(_first(stored, rtype), paths)[0][0].isoformat()
        for prefix, text in (
            ("eq", sample),
            ("eq", sample[:7]),
            ("eq", sample[:4]),
            ("ge", sample),
            ("gt", sample[:7]),
        ):
            cases.append(
                (
                    f"{rtype}?{param}={prefix}{text}",
                    expect(stored, rtype, lambda d, p=prefix, t=text, ps=paths: date_matches(d, ps, p, t)),
                )
            )
        extra = (
            ("ge", "2020-01-03"),
            ("le", "2020-01-02"),
            ("eq", "2020-01"),
            ("gt", "2019-06"),
            ("lt", "2019-06-02"),
            ("eq", "1970-05"),
            ("eq", "1980"),
            ("ge", "1980-05-31"),
        )
        for prefix, text in (("le", sample), ("lt", sample[:4]), ("ge", "2015-06-15"), ("lt", "1990"), *extra):
            cases.append(
                (
                    f"{rtype}?{param}={prefix}{text}",
                    expect(stored, rtype, lambda d, p=prefix, t=text, ps=paths: date_matches(d, ps, p, t)),
                )
            )
    return cases


def string_cases(stored: list[Doc]) -> list[tuple[str, set[str]]]:
    pat = _first(stored, "Patient")
    family, given = pat["name"][0]["family"], pat["name"][0]["given"][0]
    city = pat["address"][0]["city"]
    names = ("name.family", "name.given", "name.prefix", "name.suffix", "name.text")
    return [
        ("Patient?family=nunez", expect(stored, "Patient", lambda d: starts(d, ("name.family",), "nunez"))),
        ("Patient?given=ZOE", expect(stored, "Patient", lambda d: starts(d, ("name.given",), "zoe"))),
        ("Patient?name=ortiz", expect(stored, "Patient", lambda d: starts(d, names, "ortiz"))),
        (
            f"Patient?family={family[:3].lower()}",
            expect(stored, "Patient", lambda d: starts(d, ("name.family",), family[:3])),
        ),
        (f"Patient?family:exact={family}", expect(stored, "Patient", lambda d: family in values(d, "name.family"))),
        (
            f"Patient?family:exact={family.lower()}",
            expect(stored, "Patient", lambda d: family.lower() in values(d, "name.family")),
        ),
        (f"Patient?given={given}", expect(stored, "Patient", lambda d: starts(d, ("name.given",), given))),
        (f"Patient?name={given[:2]}", expect(stored, "Patient", lambda d: starts(d, names, given[:2]))),
        (
            f"Patient?address-city={city.upper()}",
            expect(stored, "Patient", lambda d: starts(d, ("address.city",), city)),
        ),
        (
            f"Patient?address={city}",
            expect(stored, "Patient", lambda d: starts(d, ("address.city", "address.line", "address.state"), city)),
        ),
        (
            "Patient?address-state=Massachusetts",
            expect(stored, "Patient", lambda d: starts(d, ("address.state",), "Massachusetts")),
        ),
        ("Practitioner?family=a", expect(stored, "Practitioner", lambda d: starts(d, ("name.family",), "a"))),
        (
            "Organization?name=hospital",
            expect(stored, "Organization", lambda d: starts(d, ("name", "alias"), "hospital")),
        ),
    ]


def reference_cases(stored: list[Doc]) -> list[tuple[str, set[str]]]:
    pat = _first(stored, "Patient")["id"]
    enc = _first(stored, "Encounter")["id"]
    return [
        (
            f"Observation?patient=Patient/{pat}",
            expect(stored, "Observation", lambda d: refers(d, "subject", f"Patient/{pat}")),
        ),
        (f"Observation?subject={pat}", expect(stored, "Observation", lambda d: refers(d, "subject", f"Patient/{pat}"))),
        (
            f"Observation?encounter=Encounter/{enc}",
            expect(stored, "Observation", lambda d: refers(d, "encounter", f"Encounter/{enc}")),
        ),
        (
            f"Condition?encounter={enc}",
            expect(stored, "Condition", lambda d: refers(d, "encounter", f"Encounter/{enc}")),
        ),
        (f"Procedure?patient={pat}", expect(stored, "Procedure", lambda d: refers(d, "subject", f"Patient/{pat}"))),
    ]


def quantity_cases(stored: list[Doc]) -> list[tuple[str, set[str]]]:
    def value(d: Doc) -> float | None:
        q = d.get("valueQuantity")
        return float(q["value"]) if q and "value" in q else None

    def unit_of(d: Doc) -> str | None:
        q = d.get("valueQuantity") or {}
        return q.get("unit") or q.get("code")

    return [
        (
            "Observation?value-quantity=gt100",
            expect(stored, "Observation", lambda d: (v := value(d)) is not None and v > 100),
        ),
        (
            "Observation?value-quantity=le5.5",
            expect(stored, "Observation", lambda d: (v := value(d)) is not None and v <= 5.5),
        ),
        (
            "Observation?value-quantity=ge60|http://unitsofmeasure.org|kg",
            expect(stored, "Observation", lambda d: (v := value(d)) is not None and v >= 60 and unit_of(d) == "kg"),
        ),
    ]


def test_every_search_parameter_case_matches_the_independent_evaluation(lake: tuple[TestClient, list[Doc]]) -> None:
    client, stored = lake
    cases = [
        *token_cases(stored),
        *date_cases(stored),
        *string_cases(stored),
        *reference_cases(stored),
        *quantity_cases(stored),
    ]
    failures = []
    nonempty = 0
    for query, expected in cases:
        got, _ = search(client, query + "&_count=200")
        nonempty += bool(expected)
        if sorted(got) != sorted(expected) or len(got) != len(set(got)):
            failures.append((query, len(got), len(expected)))
    assert not failures, failures
    assert nonempty >= len(cases) * 3 // 4  # the cases exercise real matches, not empty sets


def test_and_of_two_parameters_is_the_intersection(lake: tuple[TestClient, list[Doc]]) -> None:
    client, stored = lake
    vital = next(
        d for d in stored if d["resourceType"] == "Observation" and has_code(d, "category", None, "vital-signs")
    )
    pat = vital["subject"]["reference"].split("/")[1]
    year = vital["effectiveDateTime"][:4]
    expected = expect(
        stored,
        "Observation",
        lambda d: (
            refers(d, "subject", f"Patient/{pat}")
            and has_code(d, "category", None, "vital-signs")
            and date_matches(d, _OBS_DATE, "ge", year)
        ),
    )
    got, _ = search(client, f"Observation?patient={pat}&category=vital-signs&date=ge{year}&_count=7")
    assert sorted(got) == sorted(expected) and expected


def test_sort_by_last_updated_descending_and_paging(lake: tuple[TestClient, list[Doc]]) -> None:
    client, _ = lake
    got, last = search(client, "Observation?status=final&_sort=-_lastUpdated&_count=25")
    answer = client.get("/fhir/Observation?status=final&_sort=-_lastUpdated&_count=1000").json()
    stamps = [e["resource"]["meta"]["lastUpdated"] for e in answer["entry"]]
    assert stamps == sorted(stamps, reverse=True)
    assert got == [e["resource"]["id"] for e in answer["entry"]]
    assert last["total"] == len(got)


def test_summary_count_and_elements(lake: tuple[TestClient, list[Doc]]) -> None:
    client, stored = lake
    counted = client.get("/fhir/Observation?category=vital-signs&_summary=count").json()
    assert counted["total"] == len(
        expect(stored, "Observation", lambda d: has_code(d, "category", None, "vital-signs"))
    )
    assert "entry" not in counted or counted["entry"] == []
    subset = client.get("/fhir/Observation?_count=3&_elements=code").json()
    for entry in subset["entry"]:
        assert set(entry["resource"]) == {"resourceType", "id", "meta", "code"}
        assert any(t["code"] == "SUBSETTED" for t in entry["resource"]["meta"]["tag"])


def test_include_and_revinclude(lake: tuple[TestClient, list[Doc]]) -> None:
    client, stored = lake
    pat = _first(stored, "Patient")["id"]
    answer = client.get(f"/fhir/Observation?patient={pat}&_count=5&_include=Observation:patient").json()
    included = [e for e in answer["entry"] if e["search"]["mode"] == "include"]
    assert [e["resource"]["id"] for e in included] == [pat]
    answer = client.get(f"/fhir/Patient?_id={pat}&_revinclude=Condition:patient").json()
    conditions = {e["resource"]["id"] for e in answer["entry"] if e["search"]["mode"] == "include"}
    assert conditions == expect(stored, "Condition", lambda d: refers(d, "subject", f"Patient/{pat}")) and conditions


@pytest.mark.parametrize("query", ["Observation?date=sa2015", "Patient?family:contains=x", "Observation?_sort=date"])
def test_unsupported_forms_are_400_when_strict_and_reported_when_lenient(
    lake: tuple[TestClient, list[Doc]], query: str
) -> None:
    client, _ = lake
    strict = client.get(f"/fhir/{query}", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400 and strict.json()["resourceType"] == "OperationOutcome"
    if "_sort" in query:
        return
    lenient = client.get(f"/fhir/{query}").json()
    outcomes = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert outcomes and "not supported" in outcomes[0]["resource"]["issue"][0]["diagnostics"]


def test_malformed_date_is_a_400_naming_the_parameter(lake: tuple[TestClient, list[Doc]]) -> None:
    client, _ = lake
    response = client.get("/fhir/Observation?date=ge2015-13-45")
    assert response.status_code == 400
    assert "date" in orjson.dumps(response.json()).decode()
