"""Secret files are created private; pseudonyms are keyed per tenant and normalized for search."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from security.errors import KeyStoreError
from security.pseudonym import Pseudonymizer
from security.secretfile import load_or_create_secret


def test_secret_is_created_0600_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    key = load_or_create_secret(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(path) == key


def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    load_or_create_secret(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyStoreError):
        load_or_create_secret(path)


def test_pseudonyms_depend_on_key_and_tenant_and_hide_the_value() -> None:
    one, two, other_tenant = Pseudonymizer(b"a" * 32), Pseudonymizer(b"b" * 32), Pseudonymizer(b"a" * 32, "t2")
    assert one.patient_key("p1") == one.patient_key("p1") != two.patient_key("p1")
    assert one.patient_key("p1") != other_tenant.patient_key("p1")
    ssn = "123-45-6789"
    assert ssn not in one.identifier_token("Patient", "http://hl7.org/fhir/sid/us-ssn", ssn)
    assert one.identifier_token("Patient", None, "x") != one.identifier_token("Patient", "s", "x")


def test_search_values_are_normalized_before_hashing() -> None:
    pseudo = Pseudonymizer(b"k" * 32)
    assert pseudo.token("Patient", "family", "Núñez  ") == pseudo.token("Patient", "family", "NUNEZ")
    assert pseudo.token("Patient", "phone", "(555) 010-2233") == pseudo.token("Patient", "phone", "5550102233")
    assert pseudo.token("Patient", "email", " A@Example.org") == pseudo.token("Patient", "email", "a@example.org")
    assert pseudo.token("Patient", "family", "smith") != pseudo.token("Patient", "phone", "smith")
