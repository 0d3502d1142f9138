"""The key-set cache on both backends: in-process, and a real Redis (127.0.0.1:6379) shared by
replicas. Redis being down is a failure here, not a skip.

Key sets are served by the in-process JWKS server of tests/security/support.py, which counts the
fetches that reach the client's endpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from service.security.auth import Authenticator, Unauthorized, build_authenticator
from service.security.jwks import JwksStore, KeySource
from service.security.jwks_cache import (
    InMemoryKeySetCache,
    KeySetCache,
    RedisKeySetCache,
    build_key_set_cache,
)
from service.security.replay import InMemoryReplayCache
from tests.security.conftest import REDIS_URL
from tests.security.support import (
    DISCOVERY_URL,
    ISSUER,
    JWKS_URL,
    JwksServer,
    auth_settings,
    bearer,
    ec_key,
    jwks,
    mint,
    write_jwks,
)

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
JWKS_PATH = "/.well-known/jwks.json"
SOURCE = KeySource("url", JWKS_URL)


async def _keys(client: aioredis.Redis, pattern: str) -> list[bytes]:
    return [k async for k in client.scan_iter(match=pattern)]


async def _until_expired(client: aioredis.Redis, pattern: str) -> None:
    """Wait for Redis itself to expire the keys (bounded: keys that never expire fail)."""
    for _ in range(200):
        if not await _keys(client, pattern):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"keys {pattern} never expired")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the interface, on both backends -------------------------------------------------------


@pytest.fixture(params=["in-process", "redis"])
async def backend(
    request: pytest.FixtureRequest, redis_prefix: str, redis_client: aioredis.Redis
) -> AsyncIterator[KeySetCache]:
    url = REDIS_URL if request.param == "redis" else None
    cache = build_key_set_cache(url, redis_prefix)
    assert isinstance(cache, RedisKeySetCache if url else InMemoryKeySetCache)
    try:
        yield cache
    finally:
        await cache.aclose()


async def test_cache_stores_with_ttl_and_claims_fetches_once(backend: KeySetCache) -> None:
    document = json.dumps(jwks(ec_key("k1")))
    assert await backend.get("url:a") is None
    await backend.put("url:a", document, 300)
    cached = await backend.get("url:a")
    assert cached is not None and cached.document == document
    assert 0 < cached.seconds_left <= 300
    assert await backend.get("url:b") is None  # per source
    await backend.put("url:b", document, 0)  # cache time 0: nothing stored
    assert await backend.get("url:b") is None

    assert await backend.claim_fetch("url:a", 30) is True
    assert await backend.claim_fetch("url:a", 30) is False  # someone fetched just now
    assert await backend.claim_fetch("url:b", 30) is True
    assert await backend.claim_fetch("url:c", 0) is True  # no limit configured
    assert await backend.claim_fetch("url:c", 0) is True


async def test_in_process_entries_and_claims_expire() -> None:
    clock = FakeClock()
    cache = InMemoryKeySetCache(clock)
    await cache.put("url:a", "{}", 60)
    assert await cache.claim_fetch("url:a", 30)
    clock.now += 30
    assert await cache.claim_fetch("url:a", 30)  # interval over
    clock.now += 30
    assert await cache.get("url:a") is None  # TTL over


async def test_redis_keys_carry_the_ttl_and_no_url(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    cache = RedisKeySetCache.from_url(REDIS_URL, redis_prefix)
    try:
        await cache.put(str(SOURCE), "{}", 300)
        assert await cache.claim_fetch(str(SOURCE), 30)
    finally:
        await cache.aclose()
    (set_key,) = await _keys(redis_client, f"{redis_prefix}:jwks:*")
    (fetch_key,) = await _keys(redis_client, f"{redis_prefix}:jwks-fetch:*")
    assert 0 < await redis_client.pttl(set_key) <= 300_000
    assert 0 < await redis_client.pttl(fetch_key) <= 30_000
    assert b"keys.test" not in set_key + fetch_key  # hashed names


# --- replicas: apps and authenticators sharing one Redis ------------------------------------


def _url_client_settings(make_settings: Any, redis_prefix: str | None, **auth: Any) -> Any:
    cache = {"redis_url": REDIS_URL, "key_prefix": redis_prefix} if redis_prefix else {}
    return make_settings(
        auth=auth_settings(clients=[{"issuer": ISSUER, "jwks_url": JWKS_URL}], **auth),
        cache=cache,
    )


async def test_second_replica_uses_the_key_set_the_first_fetched(
    make_settings: Any, app_client: Any, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    key = ec_key()
    server = JwksServer({JWKS_PATH: jwks(key)})
    settings = _url_client_settings(make_settings, redis_prefix)
    transport = server.transport()
    async with (
        app_client(settings, jwks_transport=transport) as replica_a,
        app_client(settings, jwks_transport=transport) as replica_b,
    ):
        first = await replica_a.get("/cds-services", headers=bearer(mint(key, DISCOVERY_URL)))
        second = await replica_b.get("/cds-services", headers=bearer(mint(key, DISCOVERY_URL)))
    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert server.requests == [JWKS_URL]  # replica B never asked the client's endpoint
    (stored,) = await _keys(redis_client, f"{redis_prefix}:jwks:*")
    assert json.loads(await redis_client.get(stored)) == jwks(key)  # the public set only
    assert 0 < await redis_client.ttl(stored) <= settings.auth.jwks_cache_seconds


async def test_in_process_replicas_each_fetch(make_settings: Any, app_client: Any) -> None:
    """Without Redis every replica has its own key-set cache."""
    key = ec_key()
    server = JwksServer({JWKS_PATH: jwks(key)})
    settings = _url_client_settings(make_settings, None)
    transport = server.transport()
    async with (
        app_client(settings, jwks_transport=transport) as replica_a,
        app_client(settings, jwks_transport=transport) as replica_b,
    ):
        for replica in (replica_a, replica_b, replica_a, replica_b):
            response = await replica.get("/cds-services", headers=bearer(mint(key, DISCOVERY_URL)))
            assert response.status_code == 200, response.text
    assert server.requests == [JWKS_URL, JWKS_URL]


async def test_key_file_clients_do_not_use_redis(
    make_settings: Any,
    app_client: Any,
    redis_client: aioredis.Redis,
    redis_prefix: str,
    tmp_path: Any,
) -> None:
    key = ec_key()
    path = write_jwks(tmp_path / "jwks.json", key)
    settings = make_settings(
        auth=auth_settings(clients=[{"issuer": ISSUER, "jwks_file": str(path)}]),
        cache={"redis_url": REDIS_URL, "key_prefix": redis_prefix},
    )
    async with app_client(settings) as client:
        response = await client.get("/cds-services", headers=bearer(mint(key, DISCOVERY_URL)))
    assert response.status_code == 200, response.text
    assert await _keys(redis_client, f"{redis_prefix}:jwks*") == []
    assert len(await _keys(redis_client, f"{redis_prefix}:jti:*")) == 1


async def _verify(authenticator: Authenticator, key: Any) -> object:
    return await authenticator.authenticate(f"Bearer {mint(key, DISCOVERY_URL)}", DISCOVERY_URL)


async def test_expired_key_set_is_fetched_again(
    make_settings: Any, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    key = ec_key()
    server = JwksServer({JWKS_PATH: jwks(key)})
    settings = _url_client_settings(
        make_settings, redis_prefix, jwks_cache_seconds=1, jwks_min_refresh_seconds=0
    )
    async with httpx.AsyncClient(transport=server.transport()) as http:
        replica_a = build_authenticator(settings, http=http)
        replica_b = build_authenticator(settings, http=http)
        try:
            await _verify(replica_a, key)
            await _verify(replica_b, key)
            assert server.requests == [JWKS_URL]
            await _until_expired(redis_client, f"{redis_prefix}:jwks:*")
            await _verify(replica_b, key)  # its copy expired with the Redis one: refetch
            assert server.requests == [JWKS_URL, JWKS_URL]
            await _verify(replica_a, key)  # expired too, but B's fresh copy is in Redis
            assert server.requests == [JWKS_URL, JWKS_URL]
        finally:
            await replica_a.aclose()
            await replica_b.aclose()


def _store(http: httpx.AsyncClient, redis_prefix: str, min_refresh: float) -> JwksStore:
    shared = RedisKeySetCache.from_url(REDIS_URL, redis_prefix)
    return JwksStore(http, cache_seconds=300, min_refresh_seconds=min_refresh, shared=shared)


async def test_unknown_kid_refetch_limit_is_shared_by_replicas(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    known, rotated = ec_key("known"), ec_key("rotated")
    server = JwksServer({JWKS_PATH: jwks(known)})
    fetch_key = f"{redis_prefix}:jwks-fetch:*"
    async with httpx.AsyncClient(transport=server.transport()) as http:
        replicas = [_store(http, redis_prefix, min_refresh=1) for _ in range(4)]
        try:
            for replica in replicas:
                assert await replica.find(SOURCE, "known") is not None
            assert len(server.requests) == 1

            # Forged kids on every replica: no fetch within the interval of the first one...
            for n, replica in enumerate(replicas):
                assert await replica.find(SOURCE, f"forged-{n}") is None
            assert len(server.requests) == 1
            # ...and once it is over, one fetch for the whole deployment.
            await _until_expired(redis_client, fetch_key)
            for n, replica in enumerate(replicas):
                assert await replica.find(SOURCE, f"forged-again-{n}") is None
            assert len(server.requests) == 2

            # Rotation: the replica that fetches shares the new set with the others.
            server.documents[JWKS_PATH] = jwks(known, rotated)
            await _until_expired(redis_client, fetch_key)
            for replica in replicas:
                assert await replica.find(SOURCE, "rotated") is not None
            assert len(server.requests) == 3
        finally:
            for replica in replicas:
                await replica.aclose()


async def test_new_replica_fetches_once_even_inside_the_interval(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    """A replica with no copy at all may fetch once: else it would refuse every token until
    the interval ends (e.g. when the cache time is shorter than the refetch interval)."""
    key = ec_key("k1")
    server = JwksServer({JWKS_PATH: jwks(key)})
    async with httpx.AsyncClient(transport=server.transport()) as http:
        first, late = _store(http, redis_prefix, 300), _store(http, redis_prefix, 300)
        try:
            assert await first.find(SOURCE, "k1") is not None
            await redis_client.delete(*await _keys(redis_client, f"{redis_prefix}:jwks:*"))
            assert await late.find(SOURCE, "k1") is not None
            assert await late.find(SOURCE, "forged") is None  # and then the limit applies
            assert len(server.requests) == 2
        finally:
            await first.aclose()
            await late.aclose()


async def test_unreadable_cached_set_is_ignored_and_fetched(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    key = ec_key("k1")
    server = JwksServer({JWKS_PATH: jwks(key)})
    cache = RedisKeySetCache.from_url(REDIS_URL, redis_prefix)
    await redis_client.set(cache.set_key(str(SOURCE)), b"\xff not json", ex=300)
    async with httpx.AsyncClient(transport=server.transport()) as http:
        store = JwksStore(http, cache_seconds=300, min_refresh_seconds=30, shared=cache)
        try:
            assert await store.find(SOURCE, "k1") is not None
        finally:
            await store.aclose()
    assert server.requests == [JWKS_URL]
    assert json.loads(await redis_client.get(cache.set_key(str(SOURCE)))) == jwks(key)


async def test_redis_down_still_verifies_by_fetching(
    make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Key sets are public: without Redis each replica fetches for itself, still rate-limited.
    (In the app the replay cache, on the same Redis, still refuses every token: fail closed.)"""
    key = ec_key()
    server = JwksServer({JWKS_PATH: jwks(key)})
    settings = make_settings(
        auth=auth_settings(clients=[{"issuer": ISSUER, "jwks_url": JWKS_URL}]),
        cache={"redis_url": UNREACHABLE_REDIS},
    )
    caplog.set_level(logging.INFO, logger="service.security.jwks_cache")
    async with httpx.AsyncClient(transport=server.transport()) as http:
        authenticator = Authenticator(
            settings,
            http=http,
            replay=InMemoryReplayCache(),
            key_sets=build_key_set_cache(UNREACHABLE_REDIS, settings.cache.key_prefix),
        )
        try:
            for _ in range(3):
                caller = await _verify(authenticator, key)
                assert getattr(caller, "issuer", None) == ISSUER
            forged = mint(ec_key("forged"), DISCOVERY_URL)
            with pytest.raises(Unauthorized):
                await authenticator.authenticate(bearer(forged)["Authorization"], DISCOVERY_URL)
        finally:
            await authenticator.aclose()
    assert server.requests == [JWKS_URL]  # cached in-process; forged kid inside the interval
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # logged once, not per request
    assert "127.0.0.1" not in warnings[0].getMessage()  # no connection details
