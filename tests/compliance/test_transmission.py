"""164.312(e)(2)(i): every cipher suite the gateway may negotiate is AEAD with forward secrecy."""

from __future__ import annotations

import ssl

from security.tls import MIN_VERSION, STRONG_CIPHERS


def _server_ciphers() -> list[dict[str, object]]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    ctx.set_ciphers(STRONG_CIPHERS)
    return ctx.get_ciphers()


def test_every_negotiable_cipher_is_aead_with_forward_secrecy() -> None:
    ciphers = _server_ciphers()
    assert ciphers
    for cipher in ciphers:
        assert cipher["aead"] is True, cipher["name"]  # a modified record fails the connection
        if cipher["protocol"] == "TLSv1.2":
            assert cipher["kea"] == "kx-ecdhe", cipher["name"]
        assert cipher["protocol"] in ("TLSv1.2", "TLSv1.3"), cipher["name"]


def test_the_check_would_notice_a_weak_cipher_list() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("AES128-SHA")  # RSA key exchange, CBC + HMAC: neither AEAD nor forward-secret
    weak = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.0" or c["name"] == "AES128-SHA"]
    assert weak and weak[0]["aead"] is False
    assert ssl.TLSVersion.TLSv1_2 <= MIN_VERSION
