"""CORS: browser-based CDS clients (the public sandbox) may call only from configured origins.

Preflights are answered without a JWT (browsers never send credentials on OPTIONS); the
actual call still needs one.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.config import Settings
from tests.security.support import (
    DISCOVERY_URL,
    FEEDBACK_PATH,
    SERVICE_PATH,
    bearer,
    mint,
    one_trusted_client,
)

ALLOWED_ORIGIN = "https://sandbox.cds-hooks.org"
ENDPOINTS = [
    ("GET", "/cds-services"),
    ("POST", SERVICE_PATH),
    ("POST", FEEDBACK_PATH),
]


@pytest.fixture
def cors_settings(make_settings: Any, tmp_path: Any) -> tuple[Settings, Any]:
    auth, key = one_trusted_client(tmp_path)
    settings = make_settings(
        auth=auth,
        cors={"origins": [ALLOWED_ORIGIN]},
    )
    return settings, key


def _preflight(origin: str, method: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type",
    }


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_preflight_from_allowed_origin(
    cors_settings: tuple[Settings, Any], app_client: Any, method: str, path: str
) -> None:
    async with app_client(cors_settings[0]) as client:
        response = await client.options(path, headers=_preflight(ALLOWED_ORIGIN, method))
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert method in response.headers["access-control-allow-methods"]
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers
    assert "content-type" in allowed_headers


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://sandbox.cds-hooks.org", "https://sandbox.cds-hooks.org.evil"],
)
async def test_preflight_from_other_origin_refused(
    cors_settings: tuple[Settings, Any], app_client: Any, method: str, path: str, origin: str
) -> None:
    async with app_client(cors_settings[0]) as client:
        response = await client.options(path, headers=_preflight(origin, method))
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_preflight_refuses_unlisted_method_and_header(
    cors_settings: tuple[Settings, Any], app_client: Any
) -> None:
    async with app_client(cors_settings[0]) as client:
        delete = await client.options(SERVICE_PATH, headers=_preflight(ALLOWED_ORIGIN, "DELETE"))
        odd_header = await client.options(
            SERVICE_PATH,
            headers={
                **_preflight(ALLOWED_ORIGIN, "POST"),
                "Access-Control-Request-Headers": "x-admin",
            },
        )
    assert delete.status_code == 400
    assert odd_header.status_code == 400


async def test_actual_request_gets_origin_header_only_for_allowed_origin(
    cors_settings: tuple[Settings, Any], app_client: Any
) -> None:
    settings, key = cors_settings
    async with app_client(settings) as client:
        allowed = await client.get(
            "/cds-services",
            headers={"Origin": ALLOWED_ORIGIN, **bearer(mint(key, DISCOVERY_URL))},
        )
        other = await client.get(
            "/cds-services",
            headers={"Origin": "https://evil.example", **bearer(mint(key, DISCOVERY_URL))},
        )
        unauthenticated = await client.get("/cds-services", headers={"Origin": ALLOWED_ORIGIN})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "access-control-allow-origin" not in other.headers
    # CORS never substitutes for authentication.
    assert unauthenticated.status_code == 401


async def test_no_origins_configured_means_no_cors(make_settings: Any, app_client: Any) -> None:
    async with app_client(make_settings(cors={"origins": []})) as client:
        response = await client.options("/cds-services", headers=_preflight(ALLOWED_ORIGIN, "GET"))
    assert "access-control-allow-origin" not in response.headers
