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


def _compact_key(issuer: str, jti: str) -> bytes:
    # 16 bytes of the same digest: ~50 bytes an entry instead of ~110 for the hex string, and a
    # collision among a few hundred thousand live tokens is out of reach (2^-128 per pair).
    return hashlib.sha256(f"{issuer}\x00{jti}".encode()).digest()[:16]


class InMemoryReplayCache:
    """Bounded, expiring set for a single replica.

    When full of unexpired entries it refuses new tokens (fail closed) rather than forgetting
    one that could then be replayed; size it for peak tokens per max token lifetime, or use Redis.
    Memory is ~100 bytes a token (a set of 16-byte digests, and per expiry second a list of its
    digests): 500,000 live tokens hold ~50 MB, and entries leave as their tokens expire.
    """

    def __init__(self, max_entries: int = 500_000, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._seen: set[bytes] = set()
        self._by_second: dict[int, list[bytes]] = {}  # expiry second -> digests expiring then
        self._seconds: list[int] = []  # heap of the keys of _by_second

    def __len__(self) -> int:
        self._purge(self._clock())
        return len(self._seen)

    def _purge(self, now: float) -> None:
        while self._seconds and self._seconds[0] <= now:
            for key in self._by_second.pop(heapq.heappop(self._seconds)):
                self._seen.discard(key)

    async def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        now = self._clock()
        self._purge(now)
        key = _compact_key(issuer, jti)
        if key in self._seen:
            return False
        if len(self._seen) >= self.max_entries:
            log.error("replay cache full (%d entries); refusing tokens", self.max_entries)
            raise ReplayCacheUnavailable("in-process replay cache is full")
        self._seen.add(key)
        second = math.ceil(expires_at)  # kept until then: never forgotten early
        bucket = self._by_second.get(second)
        if bucket is None:
            bucket = self._by_second[second] = []
            heapq.heappush(self._seconds, second)
        bucket.append(key)
        return True

    async def aclose(self) -> None:
        self._seen.clear()
        self._by_second.clear()
        self._seconds.clear()


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


def build_replay_cache(
    redis_url: str | None, key_prefix: str, max_entries: int = 500_000
) -> ReplayCache:
    """Redis when configured (several replicas), else in-process."""
    if redis_url:
        return RedisReplayCache.from_url(redis_url, key_prefix)
    return InMemoryReplayCache(max_entries)
