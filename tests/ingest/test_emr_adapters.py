"""Contract every registered EMR adapter keeps (more adapters join this suite as they are added)."""

from __future__ import annotations

import orjson
import pytest

from ingest import emr_adapters
from tests.fixtures.data import synthea_paths


@pytest.mark.parametrize("name", emr_adapters.names())
def test_adapter_recognizes_and_normalizes_to_a_fhir_bundle(name: str) -> None:
    adapter = emr_adapters.load(name)
    assert adapter.name == name and adapter.version
    raw = b"\xef\xbb\xbf" + synthea_paths()[0].read_bytes()
    assert adapter.recognizes(raw, "application/fhir+json")
    assert orjson.loads(adapter.normalize(raw))["resourceType"] == "Bundle"


def test_unknown_adapter_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        emr_adapters.load("no-such-emr")
