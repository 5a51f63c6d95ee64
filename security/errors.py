"""Errors raised by the security package.

SecurityError                 (fhirlake.errors.FhirlakeError)
 ├── KeyStoreError            a key file or the key store is missing, unreadable or unsafe
 ├── KmsUnavailableError      the KMS cannot be reached: fail closed (503), retry later
 ├── KeyAccessError           the KMS refused a key operation (wrong key, context or master secret)
 ├── KeyShreddedError         the data key was destroyed: the patient was erased (410)
 ├── CiphertextError          a sealed value is malformed, tampered with or bound to another record
 ├── AuthenticationError      no valid credentials (401)
 │    └── InvalidClientError  OAuth2 client authentication failed (401)
 └── InvalidScopeError        a scope is malformed or wider than the client's registration (403)
"""

from __future__ import annotations

from fhirlake.errors import FhirlakeError


class SecurityError(FhirlakeError):
    code = "security-error"


class KeyStoreError(SecurityError):
    code = "key-store"


class KmsUnavailableError(SecurityError):
    code = "kms-unavailable"


class KeyAccessError(SecurityError):
    code = "key-access"


class KeyShreddedError(SecurityError):
    code = "key-shredded"


class CiphertextError(SecurityError):
    code = "ciphertext"


class AuthenticationError(SecurityError):
    code = "unauthenticated"


class InvalidClientError(AuthenticationError):
    code = "invalid_client"


class InvalidScopeError(SecurityError):
    code = "invalid_scope"
