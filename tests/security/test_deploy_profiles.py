"""The shipped deployment profiles load, and the sandbox one works the way the sandbox calls."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt

from service.config import load_settings
from service.security.auth import Authenticator
from tests.api.test_invoke_smoke import REQUEST
from tests.security.support import (
    FEEDBACK,
    JwksServer,
    RecordingTransport,
    bearer,
    ec_key,
    jwks,
)
from tests.support.conformance import assert_conformant_response
from tests.support.fhir_server import running_fhir_server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
OPEN_R4 = "https://launch.smarthealthit.org/v/r4/fhir"


async def test_sandbox_profile_loads() -> None:
    settings = load_settings(DEPLOY / "sandbox.toml")
    assert settings.environment == "production"
    (client,) = settings.auth.clients
    assert client.issuer == SANDBOX_ISSUER
    assert client.jwks_url == SANDBOX_JKU
    assert client.allowed_jku == [SANDBOX_JKU]
    assert client.algorithms == ["ES384"]
    assert [(a.base_url, a.allow_without_token) for a in client.fhir_servers] == [(OPEN_R4, True)]
    assert settings.cors.origins == [SANDBOX_ISSUER]
    authenticator = Authenticator(settings)  # production checks (https key URLs) pass
    await authenticator.aclose()


async def test_production_example_loads() -> None:
    settings = load_settings(DEPLOY / "production.example.toml")
    assert settings.environment == "production"
    assert settings.public_base_url.startswith("https://")
    assert settings.auth.enabled and not settings.auth.dev_client
    assert len(settings.auth.clients) == 1
    assert settings.storage.url.startswith("postgresql+psycopg://")
    assert settings.cache.redis_url is not None
    assert not any(a.allow_without_token for a in settings.auth.clients[0].fhir_servers)
    authenticator = Authenticator(settings)
    await authenticator.aclose()


def _sandbox_style_token(key: Any, aud: str) -> str:
    """Shaped exactly like cds-hooks/sandbox's jwt-generator: ES384, kid, jku, 300 s, uuid jti."""
    now = int(time.time())
    claims = {
        "iss": SANDBOX_ISSUER,
        "aud": aud,
        "exp": now + 300,
        "iat": now,
        "jti": str(uuid.uuid4()),
    }
    headers = {"typ": "JWT", "kid": key.kid, "jku": SANDBOX_JKU}
    return jwt.encode(claims, key.private, algorithm="ES384", headers=headers)


async def test_sandbox_flow_end_to_end(app_client: Any) -> None:
    """Sandbox-style JWT + open FHIR server without fhirAuthorization: the allowlisted server is
    read without a token. (The key is generated here; the sandbox's own is public anyway.)"""
    key = ec_key("44823f3d-0b01-4a6c-a80e-b9d3e8a7226f")
    keys = JwksServer({"/.well-known/jwks.json": jwks(key)})
    settings = load_settings(DEPLOY / "sandbox.toml", public_base_url="https://cds.test")
    request = {**REQUEST, "fhirServer": OPEN_R4 + "/"}
    request["prefetch"] = {k: v for k, v in REQUEST["prefetch"].items() if k != "coverage"}
    async with running_fhir_server(base_url=OPEN_R4) as fhir:
        transport = RecordingTransport(fhir.transport)
        async with app_client(
            settings, fhir_transport=transport, jwks_transport=keys.transport()
        ) as client:
            client.base_url = "https://cds.test"
            aud = "https://cds.test/cds-services/cardiac-ct-order-sign"
            response = await client.post(
                "/cds-services/cardiac-ct-order-sign",
                json=request,
                headers=bearer(_sandbox_style_token(key, aud)),
            )
    assert response.status_code == 200, response.text
    assert_conformant_response(response.json())
    assert keys.requests == [SANDBOX_JKU]
    assert transport.requests, "the open sandbox FHIR server was not queried"
    assert all(str(r.url).startswith(OPEN_R4 + "/") for r in transport.requests)
    assert all("authorization" not in r.headers for r in transport.requests)


def test_check_config_refuses_a_missing_client_key_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app as cli

    config = tmp_path / "bad.toml"
    config.write_text(
        'public_base_url = "https://cds.example.org"\n'
        "[[auth.clients]]\n"
        'issuer = "https://ehr.example.org"\n'
        'jwks_file = "keys/absent.json"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["check-config", "--config", str(config)])
    assert result.exit_code == 2
    assert "absent.json" in result.output
    good = CliRunner().invoke(cli, ["check-config", "--config", str(DEPLOY / "sandbox.toml")])
    assert good.exit_code == 0, good.output


async def test_sandbox_profile_with_a_pinned_key_file_works_offline(
    app_client: Any, tmp_path: Path
) -> None:
    """Issue 10: tokens signed exactly as the sandbox signs them (ES384, its kid, its `jku`,
    aud = URL, 300 s) against the sandbox profile with the key set pinned in a file: discovery,
    a hook call and feedback all verify, and no key URL is ever contacted (no network)."""
    key = ec_key("44823f3d-0b01-4a6c-a80e-b9d3e8a7226f")
    pinned = tmp_path / "sandbox-jwks.json"
    pinned.write_text(json.dumps(jwks(key)), encoding="utf-8")
    unreachable = JwksServer({})  # every key URL answers 404: nothing may depend on one
    settings = load_settings(DEPLOY / "sandbox.toml", public_base_url="https://cds.test")
    client_config = settings.auth.clients[0].model_copy(update={"jwks_file": pinned})
    settings = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"clients": [client_config]})}
    )
    base = "https://cds.test"
    sign_path = "/cds-services/cardiac-ct-order-sign"
    async with app_client(settings, jwks_transport=unreachable.transport()) as client:
        client.base_url = base
        discovery = await client.get(
            "/cds-services", headers=bearer(_sandbox_style_token(key, f"{base}/cds-services"))
        )
        hook = await client.post(
            sign_path, json=REQUEST, headers=bearer(_sandbox_style_token(key, base + sign_path))
        )
        feedback = await client.post(
            f"{sign_path}/feedback",
            json=FEEDBACK,
            headers=bearer(_sandbox_style_token(key, f"{base}{sign_path}/feedback")),
        )
    assert (discovery.status_code, hook.status_code, feedback.status_code) == (200, 200, 200)
    assert_conformant_response(hook.json())
    assert unreachable.requests == []
