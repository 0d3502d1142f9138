"""A real FHIR R4 server for tests: SEKMET (PyPI `sekmet-fhir`), in-process over ASGI.

No mocks: searches, paging links and 401s are the server's own. Its workflow simulator is off
so the data stays exactly as loaded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

FHIR_BASE = "http://fhir.test/fhir"
FHIR_TOKEN = "fhir-test-token"  # SEKMET's static bearer token for these tests


@dataclass
class FhirServer:
    base_url: str
    token: str
    transport: httpx.ASGITransport

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self.transport,
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
        )

    async def load(self, resources: Iterable[dict[str, Any]]) -> None:
        """PUT each resource (keeps its id)."""
        async with self.client() as client:
            for resource in resources:
                response = await client.put(
                    f"/{resource['resourceType']}/{resource['id']}", json=resource
                )
                assert response.status_code in (200, 201), response.text


@asynccontextmanager
async def running_fhir_server(
    base_url: str = FHIR_BASE, token: str = FHIR_TOKEN
) -> AsyncIterator[FhirServer]:
    from sekmet.config import ServerAuth, Settings, SimulatorSettings, set_settings
    from sekmet.main import create_app

    settings = Settings(
        base_url=base_url,
        db_path=":memory:",
        log_inbound=False,
        server_auth=ServerAuth(types=["bearer"], tokens=[token]),
        simulator=SimulatorSettings(enabled=False),
    )
    set_settings(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield FhirServer(base_url, token, httpx.ASGITransport(app=app))
