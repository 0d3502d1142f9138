"""Client keys by file and by URL: caching, allowlisted jku, key rotation, broken endpoints.

JWK Sets are served by a tiny in-process HTTP app (a real HTTP exchange over an httpx ASGI
transport); the service fetches them through its own client.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.config import Settings
from service.security.jwks import JwksError, JwksStore, KeySource, parse_jwks
from tests.security.support import (
    DISCOVERY_URL,
    EMPTY_401,
    ISSUER,
    JWKS_HOST,
    JWKS_URL,
    JwksServer,
    auth_settings,
    bearer,
    ec_key,
    jwks,
    mint,
    rsa_key,
)

JWKS_PATH = "/.well-known/jwks.json"


def _settings(make_settings: Any, **client: Any) -> Settings:
    settings: Settings = make_settings(
        auth=auth_settings(clients=[{"issuer": ISSUER, **client}], jwks_min_refresh_seconds=0)
    )
    return settings


async def test_jwks_url_fetched_once_then_cached(make_settings: Any, app_client: Any) -> None:
    key = ec_key()
    server = JwksServer({JWKS_PATH: jwks(key)})
    settings = _settings(make_settings, jwks_url=JWKS_URL)
    async with app_client(settings, jwks_transport=server.transport()) as client:
        for _ in range(3):
            response = await client.get("/cds-services", headers=bearer(mint(key, DISCOVERY_URL)))
            assert response.status_code == 200, response.text
    assert server.requests == [JWKS_URL]


async def test_allowlisted_jku_is_used(make_settings: Any, app_client: Any) -> None:
    key = rsa_key()
    jku = f"{JWKS_HOST}/ehr-a/jwks.json"
    server = JwksServer({"/ehr-a/jwks.json": jwks(key)})
    settings = _settings(make_settings, allowed_jku=[jku])
    async with app_client(settings, jwks_transport=server.transport()) as client:
        with_jku = await client.get(
            "/cds-services", headers=bearer(mint(key, DISCOVERY_URL, headers={"jku": jku}))
        )
        # No jku and no out-of-band keys configured: nothing to verify against.
        without = await client.get("/cds-services", headers=bearer(mint(key, DISCOVERY_URL)))
    assert with_jku.status_code == 200, with_jku.text
    assert without.status_code == 401
    assert server.requests == [jku]


async def test_unlisted_jku_is_never_fetched(make_settings: Any, app_client: Any) -> None:
    """The attacker serves their own key at their own jku; we must not even ask for it."""
    client_key, attacker_key = ec_key("k1"), ec_key("k1")
    server = JwksServer({JWKS_PATH: jwks(client_key), "/attacker.json": jwks(attacker_key)})
    settings = _settings(make_settings, jwks_url=JWKS_URL, allowed_jku=[JWKS_URL])
    forged = mint(attacker_key, DISCOVERY_URL, headers={"jku": f"{JWKS_HOST}/attacker.json"})
    async with app_client(settings, jwks_transport=server.transport()) as client:
        response = await client.get("/cds-services", headers=bearer(forged))
    assert response.status_code == 401
    assert response.json() == EMPTY_401
    # Only the issuer's own configured key set was read; the attacker's URL never was.
    assert server.requests == [JWKS_URL]


async def test_key_rotation_picks_up_new_kid(make_settings: Any, app_client: Any) -> None:
    old, new = ec_key("2025"), ec_key("2026")
    server = JwksServer({JWKS_PATH: jwks(old)})
    settings = _settings(make_settings, jwks_url=JWKS_URL)
    async with app_client(settings, jwks_transport=server.transport()) as client:
        before = await client.get("/cds-services", headers=bearer(mint(old, DISCOVERY_URL)))
        server.documents[JWKS_PATH] = jwks(old, new)  # the client publishes its next key
        after = await client.get("/cds-services", headers=bearer(mint(new, DISCOVERY_URL)))
    assert (before.status_code, after.status_code) == (200, 200)
    assert server.requests == [JWKS_URL, JWKS_URL]


@pytest.mark.parametrize(
    "document",
    [
        500,
        404,
        {"not": "a jwks"},
        {"keys": "nope"},
        {"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}]},  # symmetric: never trusted
    ],
    ids=["http-500", "http-404", "not-jwks", "keys-not-array", "oct-key"],
)
async def test_broken_jwks_endpoint_gives_401_not_500(
    make_settings: Any, app_client: Any, document: Any
) -> None:
    key = ec_key("k1")
    server = JwksServer({JWKS_PATH: document})
    settings = _settings(make_settings, jwks_url=JWKS_URL)
    async with app_client(settings, jwks_transport=server.transport()) as client:
        response = await client.get("/cds-services", headers=bearer(mint(key, DISCOVERY_URL)))
    assert response.status_code == 401
    assert response.json() == EMPTY_401
    assert server.requests  # it did try


async def test_unreachable_jwks_host_gives_401(make_settings: Any, app_client: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    key = ec_key()
    settings = _settings(make_settings, jwks_url=JWKS_URL)
    async with app_client(settings, jwks_transport=httpx.MockTransport(refuse)) as client:
        response = await client.get("/cds-services", headers=bearer(mint(key, DISCOVERY_URL)))
    assert response.status_code == 401


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_unknown_kid_refetch_is_rate_limited() -> None:
    known, rotated = ec_key("known"), ec_key("rotated")
    server = JwksServer({JWKS_PATH: jwks(known)})
    clock = FakeClock()
    source = KeySource("url", JWKS_URL)
    async with httpx.AsyncClient(transport=server.transport()) as http:
        store = JwksStore(http, cache_seconds=300, min_refresh_seconds=30, clock=clock)
        assert await store.find(source, "known") is not None
        assert len(server.requests) == 1
        clock.now = 5
        assert await store.find(source, "forged-1") is None  # too soon: no refetch
        assert len(server.requests) == 1
        clock.now = 40
        assert await store.find(source, "forged-2") is None  # one refetch, then give up
        assert await store.find(source, "forged-3") is None
        assert len(server.requests) == 2
        server.documents[JWKS_PATH] = jwks(known, rotated)
        clock.now = 80
        assert await store.find(source, "rotated") is not None
        assert len(server.requests) == 3


async def test_cached_keys_survive_a_failed_refresh() -> None:
    key = ec_key("k1")
    server = JwksServer({JWKS_PATH: jwks(key)})
    clock = FakeClock()
    source = KeySource("url", JWKS_URL)
    async with httpx.AsyncClient(transport=server.transport()) as http:
        store = JwksStore(http, cache_seconds=60, min_refresh_seconds=10, clock=clock)
        assert await store.find(source, "k1") is not None
        server.documents[JWKS_PATH] = 503
        clock.now = 100  # stale: refresh attempted, fails, last good set kept
        assert await store.find(source, "k1") is not None
        assert len(server.requests) == 2


def test_parse_jwks_keeps_only_public_asymmetric_signing_keys() -> None:
    ec, rsa = ec_key("ec"), rsa_key("rsa")
    enc = {**ec_key("enc").public_jwk(), "use": "enc"}
    private = {**ec_key("priv").public_jwk(), "d": "AAAA"}
    document = {
        "keys": [
            ec.public_jwk(),
            rsa.public_jwk(),
            enc,
            private,
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-384", "x": "bad", "y": "bad", "kid": "broken"},
            {"kty": "EC"},
            "not an object",
        ]
    }
    assert set(parse_jwks(document)) == {"ec", "rsa"}
    with pytest.raises(JwksError):
        parse_jwks(["not", "a", "set"])


async def test_missing_jwks_file_stops_startup(make_settings: Any, tmp_path: Any) -> None:
    from service.app import create_app

    settings = _settings(make_settings, jwks_file=str(tmp_path / "absent.json"))
    with pytest.raises(JwksError):
        create_app(settings)


def test_production_requires_https_key_urls(make_settings: Any) -> None:
    from service.app import create_app

    settings = make_settings(
        environment="production",
        auth=auth_settings(clients=[{"issuer": ISSUER, "jwks_url": "http://keys.example/j"}]),
    )
    with pytest.raises(ValueError, match="https"):
        create_app(settings)
