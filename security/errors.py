"""Errors raised by the security package.

SecurityError            (fhirlake.errors.FhirlakeError)
 └── KeyStoreError       a key file is missing, unreadable or has unsafe permissions
"""

from __future__ import annotations

from fhirlake.errors import FhirlakeError


class SecurityError(FhirlakeError):
    code = "security-error"


class KeyStoreError(SecurityError):
    code = "key-store"
