"""The pseudonym key file: created private, refused when readable by others."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from security.errors import KeyStoreError
from security.pseudonym import Pseudonymizer, load_or_create_key


def test_key_is_created_0600_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pseudonym.key"
    key = load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    load_or_create_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyStoreError):
        load_or_create_key(path)


def test_pseudonyms_depend_on_the_key_and_hide_the_value(tmp_path: Path) -> None:
    one, two = Pseudonymizer(b"a" * 32), Pseudonymizer(b"b" * 32)
    assert one.patient_key("p1") == one.patient_key("p1") != two.patient_key("p1")
    assert "123-45-6789" not in one.token("Patient", "http://hl7.org/fhir/sid/us-ssn", "123-45-6789")
    assert one.token("Patient", None, "x") != one.token("Patient", "s", "x")
