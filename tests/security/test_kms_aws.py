"""The aws-kms provider against a real moto server on loopback (and a TCP proxy to cut it off)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.stub import Stubber

from security.config import KmsSettings
from security.errors import KeyAccessError, KeyStoreError, KmsUnavailableError
from security.kms import MeteredProvider, load_provider
from security.kms_aws import AwsKmsProvider
from tests.fixtures.moto import required_moto
from tests.fixtures.netproxy import TcpProxy


@pytest.fixture(scope="module")
def kms_url() -> Iterator[str]:
    with required_moto() as url:
        yield url


def kms_settings(url: str, **overrides: object) -> KmsSettings:
    # A fresh alias prefix per provider keeps tests independent on the shared moto server.
    values: dict[str, object] = {
        "provider": "aws-kms",
        "aws_endpoint_url": url,
        "aws_alias_prefix": f"alias/fhirlake-{uuid.uuid4().hex[:12]}",
        "aws_create_keys": True,
        "aws_multi_region": False,  # moto cannot decrypt under multi-region keys (real KMS can)
        "timeout_s": 2.0,
        **overrides,
    }
    return KmsSettings.model_validate(values)


@pytest.fixture
def kms(kms_url: str, tmp_path: Path) -> AwsKmsProvider:
    return AwsKmsProvider(kms_settings(kms_url), tmp_path)


def ctx(tenant: str, subject: str = "Patient/p1") -> dict[str, str]:
    return {"tenant": tenant, "subject": subject}


def test_data_key_round_trip(kms: AwsKmsProvider) -> None:
    kek = kms.current_kek("acme")
    assert kek.startswith("arn:aws:kms:")
    assert kms.current_kek("acme") == kek

    plain, wrapped = kms.generate_data_key(kek, ctx("acme"))

    assert len(plain) == 32
    assert plain not in wrapped
    assert kms.decrypt_data_key(kek, wrapped, ctx("acme")) == plain


def test_wrong_context_is_refused_without_leaking_the_key(kms: AwsKmsProvider) -> None:
    kek = kms.current_kek("acme")
    plain, wrapped = kms.generate_data_key(kek, ctx("acme"))

    with pytest.raises(KeyAccessError) as refused:
        kms.decrypt_data_key(kek, wrapped, ctx("acme", subject="Patient/p2"))

    message = str(refused.value)
    assert "InvalidCiphertextException" in message
    assert plain.hex() not in message
    assert wrapped.hex() not in message


def test_a_tenants_key_does_not_open_under_another_tenant(kms: AwsKmsProvider) -> None:
    kek_a, kek_b = kms.current_kek("tenant-a"), kms.current_kek("tenant-b")
    assert kek_a != kek_b
    _, wrapped = kms.generate_data_key(kek_a, ctx("tenant-a"))

    with pytest.raises(KeyAccessError):
        kms.decrypt_data_key(kek_b, wrapped, ctx("tenant-b"))
    with pytest.raises(KeyAccessError):
        kms.decrypt_data_key(kek_a, wrapped, ctx("tenant-b"))


def test_rotate_moves_the_alias_and_keeps_old_keys_usable(kms: AwsKmsProvider, kms_url: str) -> None:
    old = kms.current_kek("acme")
    plain, wrapped = kms.generate_data_key(old, ctx("acme"))

    new = kms.rotate("acme")

    assert new != old
    assert kms.current_kek("acme") == new
    alias_target = boto3.client("kms", endpoint_url=kms_url).describe_key(KeyId=kms.alias("acme"))
    assert alias_target["KeyMetadata"]["Arn"] == new
    assert kms.decrypt_data_key(old, wrapped, ctx("acme")) == plain

    rewrapped = kms.rewrap(old, wrapped, new, ctx("acme"))

    assert rewrapped != wrapped
    assert kms.decrypt_data_key(new, rewrapped, ctx("acme")) == plain
    with pytest.raises(KeyAccessError):
        kms.decrypt_data_key(old, rewrapped, ctx("acme"))


def test_missing_alias_is_an_error_unless_creation_is_allowed(kms_url: str, tmp_path: Path) -> None:
    kms = AwsKmsProvider(kms_settings(kms_url, aws_create_keys=False), tmp_path)

    with pytest.raises(KeyStoreError, match=kms.alias("acme")):
        kms.current_kek("acme")
    with pytest.raises(KeyStoreError, match=kms.alias("acme")):
        kms.rotate("acme")
    with pytest.raises(KmsUnavailableError):
        kms.probe("acme")


def test_unreachable_kms_fails_fast_and_recovers(kms_url: str, tmp_path: Path) -> None:
    moto_port = urlsplit(kms_url).port
    assert moto_port is not None
    with TcpProxy("127.0.0.1", moto_port) as proxy:
        kms = AwsKmsProvider(kms_settings(proxy.url, timeout_s=0.5), tmp_path)
        kek = kms.current_kek("acme")
        kms.probe("acme")
        _, wrapped = kms.generate_data_key(kek, ctx("acme"))

        proxy.block()
        started = time.monotonic()
        with pytest.raises(KmsUnavailableError):
            kms.generate_data_key(kek, ctx("acme"))
        with pytest.raises(KmsUnavailableError):
            kms.probe("acme")
        assert time.monotonic() - started < 5

        proxy.unblock()
        kms.probe("acme")
        assert len(kms.decrypt_data_key(kek, wrapped, ctx("acme"))) == 32


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ThrottlingException", 400, KmsUnavailableError),
        ("KMSInternalException", 500, KmsUnavailableError),
        ("DependencyTimeoutException", 503, KmsUnavailableError),
        ("DisabledException", 400, KeyAccessError),
        ("KMSInvalidStateException", 400, KeyAccessError),
        ("IncorrectKeyException", 400, KeyAccessError),
    ],
)
def test_kms_error_codes_map_to_security_errors(
    tmp_path: Path, code: str, status: int, expected: type[Exception]
) -> None:
    client = boto3.client("kms", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    kms = AwsKmsProvider(KmsSettings(provider="aws-kms"), tmp_path, client=client)
    with Stubber(client) as stub:
        stub.add_client_error("generate_data_key", service_error_code=code, http_status_code=status)
        with pytest.raises(expected, match=code):
            kms.generate_data_key("arn:aws:kms:us-east-1:123456789012:key/k", ctx("acme"))


def test_registry_loads_the_aws_provider(kms_url: str, tmp_path: Path) -> None:
    provider = load_provider(kms_settings(kms_url), tmp_path)

    assert isinstance(provider, MeteredProvider)
    assert isinstance(provider.inner, AwsKmsProvider)
    assert provider.name == "aws-kms"
    provider.probe("acme")


def test_the_dr_region_unwraps_with_its_replica_of_a_multi_region_key(kms_url: str, tmp_path: Path) -> None:
    primary = AwsKmsProvider(kms_settings(kms_url, aws_region="us-east-1", aws_multi_region=True), tmp_path)
    kek = primary.current_kek("acme")
    assert ":key/mrk-" in kek  # created multi-region, so the DR region can hold a replica
    plain, wrapped = b"k" * 32, b"wrapped-under-the-primary"  # moto cannot wrap under an mrk key
    # The DR region's provider calls KMS with its own region's ARN of the same key id.
    client = boto3.client("kms", region_name="us-west-2", endpoint_url=kms_url)
    secondary = AwsKmsProvider(kms_settings(kms_url, aws_region="us-west-2"), tmp_path, client=client)
    replica = secondary.in_region(kek)
    assert replica == kek.replace(":us-east-1:", ":us-west-2:")
    with Stubber(client) as stub:
        expected = {"CiphertextBlob": wrapped, "EncryptionContext": ctx("acme"), "KeyId": replica}
        stub.add_response("decrypt", {"Plaintext": plain, "KeyId": replica}, expected)
        assert secondary.decrypt_data_key(kek, wrapped, ctx("acme")) == plain
    single = "arn:aws:kms:us-east-1:123456789012:key/0a1b2c3d-1111-2222-3333-444455556666"
    assert secondary.in_region(single) == single  # a single-region key is never redirected
