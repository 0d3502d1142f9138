"""Where fetched JWK Sets and their refetch rate limit live: this process, or Redis for replicas.

Spec: https://cds-hooks.hl7.org/2.0/#trusting-cds-clients ("jku ... JWK Set URL").
Same shape as the replay cache: one small interface, two backends. With Redis, a key set one
replica fetched serves every replica until its TTL ends, and the unknown-`kid` refetch limit is
one fetch per URL per interval for the whole deployment (`SET NX PX`), so N replicas do not
multiply the traffic on a client's JWKS endpoint. Only validated public key sets are stored.
They are public data, so when Redis cannot answer this falls back to the in-process backend
(each replica fetches for itself) instead of failing closed like the replay cache.
FHIR responses are never cached anywhere: they carry PHI and belong to one request.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedKeySet:
    document: str  # the validated JWK Set as canonical JSON
    seconds_left: float  # until it must be fetched again


class KeySetCache(Protocol):
    async def get(self, name: str) -> CachedKeySet | None:
        """The key set stored under `name` (a key source) while it is fresh, else None."""

    async def put(self, name: str, document: str, ttl_seconds: float) -> None:
        """Store a freshly fetched key set; a TTL of 0 or less stores nothing."""

    async def claim_fetch(self, name: str, interval_seconds: float) -> bool:
        """True if the caller may fetch `name` now; then nobody else may for the interval."""

    async def aclose(self) -> None: ...


class InMemoryKeySetCache:
    """One replica's key sets and fetch times. Bounded by the configured key URLs and files."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sets: dict[str, tuple[str, float]] = {}  # name -> (document, expires_at)
        self._next_fetch: dict[str, float] = {}

    def lookup(self, name: str) -> CachedKeySet | None:
        stored = self._sets.get(name)
        if stored is None:
            return None
        document, expires_at = stored
        left = expires_at - self._clock()
        if left <= 0:
            del self._sets[name]
            return None
        return CachedKeySet(document, left)

    def store(self, name: str, document: str, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            self._sets.pop(name, None)
            return
        self._sets[name] = (document, self._clock() + ttl_seconds)

    def claim(self, name: str, interval_seconds: float) -> bool:
        now = self._clock()
        if now < self._next_fetch.get(name, -math.inf):
            return False
        self._next_fetch[name] = now + interval_seconds
        return True

    async def get(self, name: str) -> CachedKeySet | None:
        return self.lookup(name)

    async def put(self, name: str, document: str, ttl_seconds: float) -> None:
        self.store(name, document, ttl_seconds)

    async def claim_fetch(self, name: str, interval_seconds: float) -> bool:
        return self.claim(name, interval_seconds)

    async def aclose(self) -> None:
        self._sets.clear()
        self._next_fetch.clear()


def _hashed(name: str) -> str:
    # Bounded key length, and the key names do not spell out client URLs.
    return hashlib.sha256(name.encode()).hexdigest()


def _millis(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisKeySetCache:
    """Shared across replicas; while Redis cannot answer, the in-process backend stands in."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self._sets_prefix = f"{prefix}:jwks:"
        self._fetch_prefix = f"{prefix}:jwks-fetch:"
        self._fallback = InMemoryKeySetCache(clock)
        self._reachable = True

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisKeySetCache:
        client = aioredis.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=30
        )
        return cls(client, prefix)

    def set_key(self, name: str) -> str:
        return self._sets_prefix + _hashed(name)

    def fetch_key(self, name: str) -> str:
        return self._fetch_prefix + _hashed(name)

    async def get(self, name: str) -> CachedKeySet | None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(self.set_key(name))
                pipe.pttl(self.set_key(name))
                value, ttl_ms = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._down(exc)
            return self._fallback.lookup(name)
        self._up()
        # ttl_ms is -1 for a key without expiry (not written by us): treat it as absent.
        if value is None or not isinstance(ttl_ms, int) or ttl_ms <= 0:
            return None
        try:
            document = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            return None
        return CachedKeySet(document, ttl_ms / 1000)

    async def put(self, name: str, document: str, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            return
        try:
            await self._redis.set(self.set_key(name), document.encode(), px=_millis(ttl_seconds))
        except (RedisError, OSError) as exc:
            self._down(exc)
            self._fallback.store(name, document, ttl_seconds)
            return
        self._up()

    async def claim_fetch(self, name: str, interval_seconds: float) -> bool:
        if interval_seconds <= 0:
            return True
        try:
            claimed = await self._redis.set(
                self.fetch_key(name), b"1", nx=True, px=_millis(interval_seconds)
            )
        except (RedisError, OSError) as exc:
            self._down(exc)
            return self._fallback.claim(name, interval_seconds)
        self._up()
        return bool(claimed)

    def _down(self, exc: BaseException) -> None:
        if self._reachable:
            self._reachable = False
            log.warning(
                "key-set cache (Redis) unavailable (%s): this replica fetches key sets itself",
                type(exc).__name__,
            )

    def _up(self) -> None:
        if not self._reachable:
            self._reachable = True
            log.info("key-set cache (Redis) reachable again")

    async def aclose(self) -> None:
        await self._redis.aclose()
        await self._fallback.aclose()


def build_key_set_cache(redis_url: str | None, key_prefix: str) -> KeySetCache:
    """Redis when configured (several replicas), else in-process."""
    if redis_url:
        return RedisKeySetCache.from_url(redis_url, key_prefix)
    return InMemoryKeySetCache()
