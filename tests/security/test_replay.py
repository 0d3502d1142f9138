"""The jti replay cache on both backends: in-process and a real Redis (127.0.0.1:6379).

Redis being down is a failure here, not a skip: replicas depend on it for replay protection.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from service.security.replay import (
    InMemoryReplayCache,
    RedisReplayCache,
    ReplayCacheUnavailable,
    build_replay_cache,
)
from tests.api.test_invoke_smoke import REQUEST
from tests.conftest import SERVICE_BASE
from tests.security.conftest import REDIS_URL
from tests.security.support import (
    EMPTY_401,
    ISSUER,
    SERVICE_PATH,
    bearer,
    mint,
    one_trusted_client,
)

SERVICE_URL = f"{SERVICE_BASE}{SERVICE_PATH}"


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_in_memory_first_use_then_replay() -> None:
    cache = InMemoryReplayCache()
    expires = time.time() + 300
    assert await cache.first_use(ISSUER, "jti-1", expires) is True
    assert await cache.first_use(ISSUER, "jti-1", expires) is False
    # The same jti from another issuer is a different token.
    assert await cache.first_use("https://other.example", "jti-1", expires) is True


async def test_in_memory_entries_expire_and_are_purged() -> None:
    clock = FakeClock()
    cache = InMemoryReplayCache(clock=clock)
    assert await cache.first_use(ISSUER, "a", clock.now + 60)
    assert await cache.first_use(ISSUER, "b", clock.now + 600)
    assert len(cache) == 2
    clock.now += 61
    assert len(cache) == 1  # "a" expired (its token can no longer be used anyway)
    assert await cache.first_use(ISSUER, "b", clock.now + 600) is False


async def test_in_memory_full_cache_fails_closed() -> None:
    clock = FakeClock()
    cache = InMemoryReplayCache(max_entries=2, clock=clock)
    assert await cache.first_use(ISSUER, "a", clock.now + 60)
    assert await cache.first_use(ISSUER, "b", clock.now + 60)
    with pytest.raises(ReplayCacheUnavailable):
        await cache.first_use(ISSUER, "c", clock.now + 60)
    assert await cache.first_use(ISSUER, "a", clock.now + 60) is False  # still remembered
    clock.now += 61
    assert await cache.first_use(ISSUER, "c", clock.now + 60)  # room again after expiry


async def test_redis_first_use_then_replay_with_ttl(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    cache = build_replay_cache(REDIS_URL, redis_prefix)
    assert isinstance(cache, RedisReplayCache)
    try:
        expires = time.time() + 300
        assert await cache.first_use(ISSUER, "jti-1", expires) is True
        assert await cache.first_use(ISSUER, "jti-1", expires) is False
        assert await cache.first_use("https://other.example", "jti-1", expires) is True
        keys = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}:jti:*")]
        assert len(keys) == 2
        ttl = await redis_client.ttl(keys[0])
        assert 0 < ttl <= 301  # expires with the token, so Redis does not grow forever
        assert b"jti-1" not in keys[0]  # hashed: no raw client data in key names
    finally:
        await cache.aclose()


async def test_redis_unreachable_fails_closed() -> None:
    cache = RedisReplayCache.from_url("redis://127.0.0.1:1/0", "unreachable")
    try:
        with pytest.raises(ReplayCacheUnavailable):
            await cache.first_use(ISSUER, "jti-1", time.time() + 300)
    finally:
        await cache.aclose()


@pytest.fixture
def shared_settings(make_settings: Any, tmp_path: Any, redis_prefix: str) -> tuple[Any, Any]:
    auth, key = one_trusted_client(tmp_path)
    settings = make_settings(
        auth=auth,
        cache={"redis_url": REDIS_URL, "key_prefix": redis_prefix},
    )
    return settings, key


async def test_two_replicas_sharing_redis_reject_the_same_jti(
    shared_settings: tuple[Any, Any], app_client: Any, redis_client: aioredis.Redis
) -> None:
    settings, key = shared_settings
    token = mint(key, SERVICE_URL)
    other = mint(key, SERVICE_URL)
    async with app_client(settings) as replica_a, app_client(settings) as replica_b:
        first = await replica_a.post(SERVICE_PATH, json=REQUEST, headers=bearer(token))
        replayed = await replica_b.post(SERVICE_PATH, json=REQUEST, headers=bearer(token))
        fresh = await replica_b.post(SERVICE_PATH, json=REQUEST, headers=bearer(other))
    assert first.status_code == 200, first.text
    assert replayed.status_code == 401
    assert replayed.json() == EMPTY_401
    assert fresh.status_code == 200, fresh.text


async def test_in_process_replicas_do_not_share(
    make_settings: Any, app_client: Any, tmp_path: Any
) -> None:
    """Why Redis is needed with several replicas: in-process caches are per replica."""
    auth, key = one_trusted_client(tmp_path)
    settings = make_settings(auth=auth)
    token = mint(key, SERVICE_URL)
    async with app_client(settings) as replica_a, app_client(settings) as replica_b:
        first = await replica_a.post(SERVICE_PATH, json=REQUEST, headers=bearer(token))
        second = await replica_b.post(SERVICE_PATH, json=REQUEST, headers=bearer(token))
    assert (first.status_code, second.status_code) == (200, 200)


async def test_redis_down_means_401_not_500(
    make_settings: Any, app_client: Any, tmp_path: Any
) -> None:
    auth, key = one_trusted_client(tmp_path)
    settings = make_settings(
        auth=auth,
        cache={"redis_url": "redis://127.0.0.1:1/0"},
    )
    async with app_client(settings) as client:
        response = await client.post(
            SERVICE_PATH, json=REQUEST, headers=bearer(mint(key, SERVICE_URL))
        )
    assert response.status_code == 401
    assert response.json() == EMPTY_401


async def test_in_memory_cache_memory_per_token_is_small() -> None:
    """A replica at 500 calls/s with 5-minute tokens remembers 150,000 tokens at once: at
    ~100 bytes each that is ~15 MB (hex-string keys with a heap of expiry tuples took ~240)."""
    import tracemalloc

    cache = InMemoryReplayCache()
    now = time.time()
    tracemalloc.start()
    try:
        for i in range(100_000):
            assert await cache.first_use(ISSUER, f"{i:08d}-jti-{i * 7919}", now + 300 + i / 500)
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert used / 100_000 < 150


def test_replay_cache_size_comes_from_the_settings() -> None:
    cache = build_replay_cache(None, "unused", max_entries=1234)
    assert isinstance(cache, InMemoryReplayCache)
    assert cache.max_entries == 1234
