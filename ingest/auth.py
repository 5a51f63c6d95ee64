"""Authentication use cases: from a bearer token and a client certificate to an ``Access``.

The gateway hands over what arrived on the wire (the ``Authorization`` header,
the ASGI scope with the transport's verified client certificate); this module
turns it into a principal and a per-request access context, and serves the
OAuth2 token endpoint and break-glass grants. The default is deny: no valid
token, no access.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ingest.access import Access
from ingest.errors import ForbiddenError, InvalidInputError, Issue, ResourceNotFoundError
from ingest.journal import Journal
from security.authz import Authorizer, Kind
from security.breakglass import BreakGlassError, BreakGlassLedger, Grant
from security.config import TlsSettings
from security.errors import AuthenticationError
from security.oauth import AuthorizationServer
from security.principal import Role
from security.pseudonym import Pseudonymizer
from security.tls import ClientCertError, client_cert_from_scope


class AuthService:
    def __init__(
        self,
        oauth: AuthorizationServer,
        authorizer: Authorizer,
        journal: Journal,
        pseudo: Pseudonymizer,
        ledger: BreakGlassLedger,
        tls: TlsSettings,
        ca_pem: bytes | None,
        break_glass_minutes: int,
    ) -> None:
        self.oauth = oauth
        self._authorizer = authorizer
        self._journal = journal
        self._pseudo = pseudo
        self._ledger = ledger
        self._tls = tls
        self._ca_pem = ca_pem
        self._break_glass_minutes = break_glass_minutes

    def access(self, authorization: str | None, scope: Mapping[str, Any], *, write: bool = False) -> Access:
        """Authenticate a request. Raises AuthenticationError (401) or ForbiddenError (403).

        ``write``: the request changes data, so it must also come over mTLS from a
        registered EMR integration whose certificate names the token's client.
        """
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("a bearer token is required")
        principal = self.oauth.authenticate(token.strip())
        cert = None
        if self._ca_pem is not None:
            try:
                cert = client_cert_from_scope(scope, self._tls, self._ca_pem)
            except ClientCertError:
                raise ForbiddenError(
                    "bad certificate", [Issue("security", "the client certificate is not valid")]
                ) from None
        if cert is not None:
            principal = dataclasses.replace(principal, cert_subject=cert.subject)
        if write and (cert is None or cert.common_name != principal.client_id):
            raise ForbiddenError(
                "mTLS required",
                [Issue("security", "writes need a client certificate issued to the token's client")],
            )
        return Access(principal, self._authorizer, self._journal, self._pseudo, self._ledger)

    def close(self) -> None:
        self._ledger.close()
        self.oauth.registry.close()

    def token(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The OAuth2 token endpoint (client_credentials with private_key_jwt)."""
        return self.oauth.token(form)

    def require(self, access: Access, kind: Kind, action: str) -> None:
        access.require_kind(kind, action)

    def break_glass(self, access: Access, patient: str, reason: str, purpose: str) -> Grant:
        """Open a break-glass grant for a clinician. Raises ForbiddenError, InvalidInputError."""
        access.require_kind(Kind.BREAK_GLASS, "request")
        if access.principal.role is not Role.CLINICIAN:
            raise ForbiddenError("forbidden", [Issue("forbidden", "only clinicians may break the glass")])
        rid = patient.removeprefix("Patient/")
        if self._journal.current("Patient", rid) is None:
            raise ResourceNotFoundError("Patient resource not found")
        try:
            return self._ledger.open(
                access.principal.client_id,
                access.principal.fhir_user,
                self._pseudo.patient_key(rid),
                purpose,
                reason,
                self._break_glass_minutes,
            )
        except BreakGlassError as exc:
            raise InvalidInputError("break-glass refused", [Issue("required", exc.message)]) from None
