"""Who is calling: CDS client authentication (signed JWT) and what that client may reach.

Spec: https://cds-hooks.hl7.org/2.0/#trusting-cds-clients
"""

from __future__ import annotations

from dataclasses import dataclass

from service.config import FhirServerAllowance, Settings, TrustedClient


class Unauthorized(Exception):
    """Authentication failed. The reason is for tests and debug logs only, never the client."""


@dataclass(frozen=True)
class Caller:
    """An authenticated CDS client (or the anonymous caller when auth is disabled)."""

    issuer: str | None
    jti: str | None
    fhir_servers: tuple[FhirServerAllowance, ...]

    def fhir_allowance(self, fhir_server: str) -> FhirServerAllowance | None:
        """The allowlist entry for `fhir_server`, or None: then it must never be contacted."""
        wanted = fhir_server.rstrip("/")
        return next((a for a in self.fhir_servers if a.base_url == wanted), None)


class Authenticator:
    """Verifies the `Authorization: Bearer <JWT>` of each call against the trusted clients."""

    def __init__(self, settings: Settings, clients: list[TrustedClient] | None = None) -> None:
        self.settings = settings
        self.clients = clients if clients is not None else list(settings.auth.clients)

    async def authenticate(self, authorization: str | None, audience: str) -> Caller:
        if not self.settings.auth.enabled:
            return Caller(None, None, tuple(self.settings.auth.unauthenticated_fhir_servers))
        raise Unauthorized("JWT verification not configured")
