"""SSRF: a `fhirServer` outside the caller's allowlist is never contacted.

The answer still comes back (200, cards from prefetch). A positive control shows the same
request *does* reach an allowlisted server, so "no request" is not just "never fetches".
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from service.config import FhirServerAllowance, Settings
from service.security.auth import Caller
from tests.api.test_invoke_smoke import REQUEST
from tests.conftest import SERVICE_BASE
from tests.security.support import (
    ISSUER,
    SERVICE_PATH,
    RecordingTransport,
    bearer,
    mint,
    one_trusted_client,
)
from tests.support.conformance import assert_conformant_response, conformant_body, topics
from tests.support.fhir_server import FhirServer

ALLOWED = "http://fhir.test/fhir"
SERVICE_URL = f"{SERVICE_BASE}{SERVICE_PATH}"


def _caller(*urls: str) -> Caller:
    return Caller(ISSUER, "jti", tuple(FhirServerAllowance(base_url=u) for u in urls))


@pytest.mark.parametrize(
    "named",
    [
        "http://fhir.test/fhir",
        "http://fhir.test/fhir/",
        "HTTP://FHIR.TEST/fhir",
        "http://fhir.test:80/fhir",
    ],
)
def test_allowance_matches_same_server_spelled_differently(named: str) -> None:
    allowance = _caller(ALLOWED).fhir_allowance(named)
    assert allowance is not None
    assert allowance.base_url == ALLOWED  # callers contact the configured URL, not the input


HOSTILE = [
    "http://evil.test/fhir",
    "http://fhir.test@evil.test/fhir",  # userinfo: the host is evil.test
    "http://fhir.test/fhir@evil.test",
    "http://user:pw@fhir.test/fhir",
    "http://fhir.test.evil.test/fhir",
    "http://fhir.test:8080/fhir",
    "https://fhir.test/fhir",
    "http://fhir.test/fhir2",
    "http://fhir.test/fhir/..",
    "http://fhir.test/fhir/../admin",
    "http://fhir.test/fhir/%2e%2e",
    "http://fhir.test/fhir?target=http://evil.test",
    "http://fhir.test/fhir#frag",
    "http://fhir.test\\@evil.test/fhir",
    " http://fhir.test/fhir",
    "http://fhir.test/FHIR",
    "file:///etc/passwd",
    "gopher://fhir.test/fhir",
    "http://169.254.169.254/latest/meta-data",
    "",
]


@pytest.mark.parametrize("named", HOSTILE)
def test_allowance_refuses_anything_else(named: str) -> None:
    assert _caller(ALLOWED).fhir_allowance(named) is None


def _request(fhir_server: str) -> dict[str, Any]:
    request = copy.deepcopy(REQUEST)
    del request["prefetch"]["coverage"]  # missing: the service would fetch it from fhirServer
    request["fhirServer"] = fhir_server
    request["fhirAuthorization"] = {
        "access_token": "fhir-test-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/Coverage.read",
        "subject": "cardiac-ct-cds",
    }
    return request


@pytest.fixture
def ssrf_settings(make_settings: Any, tmp_path: Any) -> tuple[Settings, Any]:
    auth, key = one_trusted_client(tmp_path, fhir_servers=[{"base_url": ALLOWED}])
    return make_settings(auth=auth), key


@pytest.mark.parametrize(
    "named",
    [
        "http://evil.test/fhir",
        "http://fhir.test@evil.test/fhir",
        "http://fhir.test/fhir@evil.test",
        "http://fhir.test:8080/fhir",
        "http://fhir.test/fhir/../admin",
        "http://169.254.169.254/latest/meta-data",
    ],
)
async def test_unlisted_fhir_server_is_never_contacted(
    ssrf_settings: tuple[Settings, Any], app_client: Any, named: str
) -> None:
    settings, key = ssrf_settings
    transport = RecordingTransport()
    async with app_client(settings, fhir_transport=transport) as client:
        response = await client.post(
            SERVICE_PATH, json=_request(named), headers=bearer(mint(key, SERVICE_URL))
        )
    assert transport.requests == []
    body = conformant_body(response)
    assert "cac-bundling-conflict" in topics(body)  # computed from the draft orders alone


async def test_authenticated_caller_without_allowlist_contacts_nothing(
    make_settings: Any, app_client: Any, tmp_path: Any
) -> None:
    auth, key = one_trusted_client(tmp_path)
    settings = make_settings(auth=auth)
    transport = RecordingTransport()
    async with app_client(settings, fhir_transport=transport) as client:
        response = await client.post(
            SERVICE_PATH, json=_request(ALLOWED), headers=bearer(mint(key, SERVICE_URL))
        )
    assert transport.requests == []
    assert response.status_code == 200, response.text
    assert_conformant_response(response.json())


async def test_positive_control_allowlisted_server_is_contacted(
    ssrf_settings: tuple[Settings, Any], app_client: Any, fhir_server: FhirServer
) -> None:
    """Same request, allowlisted server (a real FHIR server): the service does fetch."""
    settings, key = ssrf_settings
    transport = RecordingTransport(fhir_server.transport)
    async with app_client(settings, fhir_transport=transport) as client:
        response = await client.post(
            SERVICE_PATH, json=_request(ALLOWED + "/"), headers=bearer(mint(key, SERVICE_URL))
        )
    assert response.status_code == 200, response.text
    assert_conformant_response(response.json())
    assert transport.requests, "the allowlisted FHIR server was not queried"
    assert {r.url.host for r in transport.requests} == {"fhir.test"}
    assert all(r.url.path.startswith("/fhir/") for r in transport.requests)
