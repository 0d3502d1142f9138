"""The `jti` replay cache: a JWT is accepted at most once during its lifetime.

Spec: https://cds-hooks.hl7.org/2.0/#trusting-cds-clients ("jti ... nonce against replay").
Two backends behind one small interface: in-process (one replica) and Redis (`SET NX EX`, so
every replica sharing the Redis sees the same tokens). Entries are only written after the
signature and claims verified, so an unauthenticated caller cannot fill the cache.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class ReplayCacheUnavailable(Exception):
    """The cache could not answer; callers must fail closed (refuse the token)."""


class ReplayCache(Protocol):
    async def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        """Record (issuer, jti) until `expires_at` (epoch seconds); False if already recorded."""

    async def aclose(self) -> None: ...


def _key(issuer: str, jti: str) -> str:
    # Hashed: bounded key length whatever the client sends, and no raw token data in Redis.
    return hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()


class InMemoryReplayCache:
    """Bounded, expiring set for a single replica.

    When full of unexpired entries it refuses new tokens (fail closed) rather than forgetting
    one that could then be replayed; size it for peak tokens per max token lifetime, or use Redis.
    """

    def __init__(self, max_entries: int = 200_000, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        self._purge(self._clock())
        return len(self._expiry)

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires_at, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires_at:
                del self._expiry[key]

    async def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        now = self._clock()
        self._purge(now)
        key = _key(issuer, jti)
        if key in self._expiry:
            return False
        if len(self._expiry) >= self.max_entries:
            log.error("replay cache full (%d entries); refusing tokens", self.max_entries)
            raise ReplayCacheUnavailable("in-process replay cache is full")
        self._expiry[key] = expires_at
        heapq.heappush(self._heap, (expires_at, key))
        return True

    async def aclose(self) -> None:
        self._expiry.clear()
        self._heap.clear()


class RedisReplayCache:
    """Shared across replicas: `SET key 1 NX EX ttl` is atomic, so exactly one replica wins."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._prefix = f"{prefix}:jti:"
        self._clock = clock

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisReplayCache:
        client = aioredis.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=30
        )
        return cls(client, prefix)

    async def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        ttl = max(1, math.ceil(expires_at - self._clock()))
        try:
            created = await self._redis.set(self._prefix + _key(issuer, jti), b"1", nx=True, ex=ttl)
        except (RedisError, OSError) as exc:
            log.error("replay cache (Redis) unavailable: %s", type(exc).__name__)
            raise ReplayCacheUnavailable("Redis replay cache unavailable") from None
        return bool(created)

    async def aclose(self) -> None:
        await self._redis.aclose()


def build_replay_cache(redis_url: str | None, key_prefix: str) -> ReplayCache:
    """Redis when configured (several replicas), else in-process."""
    if redis_url:
        return RedisReplayCache.from_url(redis_url, key_prefix)
    return InMemoryReplayCache()
