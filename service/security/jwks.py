"""Public keys of trusted CDS clients (JWK Sets), from a file or an allowlisted URL.

Spec: https://cds-hooks.hl7.org/2.0/#trusting-cds-clients ("jku ... JWK Set URL").
Fetched sets are cached per source for `jwks_cache_seconds` (in-process, or in Redis shared by
all replicas: see jwks_cache.py); an unknown `kid` causes at most one refetch per
`jwks_min_refresh_seconds` (per replica, or per deployment with Redis), so key rotation works but
forged tokens cannot make us hammer a client's endpoint. If a refetch fails the last good set
stays in use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from service.security.jwks_cache import CachedKeySet, InMemoryKeySetCache, KeySetCache

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 64 * 1024
# Asymmetric key types only: an "oct" (shared secret) key must never verify a CDS client JWT.
_KEY_TYPES = {"EC", "RSA"}
_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


class JwksError(Exception):
    """A JWK Set could not be read or is not a JWK Set."""


Jwk = dict[str, Any]


@dataclass(frozen=True)
class KeySource:
    """Where a client's keys live: `kind` is "file" or "url"."""

    kind: str
    location: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}"


def parse_jwks(document: object) -> dict[str, Jwk]:
    """Usable signing keys by `kid`; keys that are symmetric, private or malformed are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("not a JWK Set (no 'keys' array)")
    keys: dict[str, Jwk] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or jwk.get("kty") not in _KEY_TYPES:
            continue
        if jwk.get("use", "sig") != "sig" or _PRIVATE_MEMBERS & jwk.keys():
            continue
        try:
            PyJWK(jwk)  # does it load at all?
        except PyJWTError:
            log.warning("skipping unusable JWK kid=%s", kid)
            continue
        keys[kid] = jwk
    return keys


def read_jwks_file(path: Path) -> dict[str, Jwk]:
    try:
        return parse_jwks(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise JwksError(f"cannot read JWK Set {path}: {type(exc).__name__}") from None


def canonical_jwks(keys: dict[str, Jwk]) -> str:
    """The validated set as stable JSON: what the key-set cache stores and compares."""
    return json.dumps({"keys": list(keys.values())}, sort_keys=True, separators=(",", ":"))


@dataclass
class _Entry:
    keys: dict[str, Jwk]
    document: str  # canonical_jwks(keys)
    expires_at: float  # on this process's clock


class JwksStore:
    """Looks up a client's public key by (source, kid), fetching and caching JWK Sets.

    Parsed keys are kept per process; `shared` (Redis with several replicas) is asked before
    fetching a URL and decides who may fetch. Key files are read by each replica itself.
    """

    def __init__(
        self,
        http: httpx.AsyncClient | None,
        *,
        cache_seconds: float,
        min_refresh_seconds: float,
        shared: KeySetCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Created on first fetch when not given: file-only setups never open an HTTP client.
        self._http = http
        self._own_http: httpx.AsyncClient | None = None
        self._cache_seconds = cache_seconds
        self._min_refresh = min_refresh_seconds
        self._clock = clock
        self._local = InMemoryKeySetCache(clock)
        self._shared: KeySetCache = shared if shared is not None else self._local
        self._entries: dict[KeySource, _Entry] = {}
        self._tried: set[KeySource] = set()
        self._locks: dict[KeySource, asyncio.Lock] = {}

    async def aclose(self) -> None:
        await self._shared.aclose()
        if self._own_http is not None:
            await self._own_http.aclose()
            self._own_http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is not None:
            return self._http
        if self._own_http is None:
            self._own_http = httpx.AsyncClient(follow_redirects=False, timeout=5.0)
        return self._own_http

    def _cache_for(self, source: KeySource) -> KeySetCache:
        return self._shared if source.kind == "url" else self._local

    def preload_file(self, path: Path) -> int:
        """Read a key file at startup so a missing or broken file stops the service early."""
        source = KeySource("file", str(path))
        keys = read_jwks_file(path)
        if not keys:
            raise JwksError(f"JWK Set {path} holds no usable signing key")
        self._remember(source, keys)
        self._local.store(str(source), self._entries[source].document, self._cache_seconds)
        self._local.claim(str(source), self._min_refresh)
        self._tried.add(source)
        return len(keys)

    async def find(self, source: KeySource, kid: str) -> Jwk | None:
        entry = self._entries.get(source)
        if entry is None or not self._usable(entry, kid):
            async with self._locks.setdefault(source, asyncio.Lock()):
                entry = await self._refresh(source, kid)
        return entry.keys.get(kid) if entry is not None else None

    def _usable(self, entry: _Entry, kid: str) -> bool:
        return kid in entry.keys and self._clock() < entry.expires_at

    async def _refresh(self, source: KeySource, kid: str) -> _Entry | None:
        """The cache first (another replica may have fetched it), then the source if allowed.

        Unknown `kid`: maybe the client rotated its keys, so one refetch per interval. Only a
        replica holding no copy at all that never tried may fetch inside the interval (once per
        replica), else it would refuse every token until the interval ends. If a fetch fails,
        the last good set stays in use.
        """
        entry = self._entries.get(source)
        if entry is not None and self._usable(entry, kid):
            return entry  # another request refreshed it while we waited
        cache = self._cache_for(source)
        cached = await cache.get(str(source))
        if cached is not None:
            entry = self._adopt(source, cached)
            if entry is not None and kid in entry.keys:
                return entry
        claimed = await cache.claim_fetch(str(source), self._min_refresh)
        if not claimed and (entry is not None or source in self._tried):
            return entry
        self._tried.add(source)
        try:
            keys = await self._load(source)
        except JwksError as exc:
            log.warning("JWK Set %s not refreshed: %s", source, exc)
            return entry
        log.info("JWK Set %s loaded: %d key(s)", source, len(keys))
        entry = self._remember(source, keys)
        await cache.put(str(source), entry.document, self._cache_seconds)
        return entry

    def _remember(self, source: KeySource, keys: dict[str, Jwk]) -> _Entry:
        entry = _Entry(keys, canonical_jwks(keys), self._clock() + self._cache_seconds)
        self._entries[source] = entry
        return entry

    def _adopt(self, source: KeySource, cached: CachedKeySet) -> _Entry | None:
        """Use a cached set (parsed again only if it differs from ours) until its TTL ends."""
        entry = self._entries.get(source)
        expires_at = self._clock() + cached.seconds_left
        if entry is not None and entry.document == cached.document:
            entry.expires_at = expires_at
            return entry
        try:
            keys = parse_jwks(json.loads(cached.document))
        except (ValueError, JwksError):
            log.warning("cached JWK Set %s unreadable; ignored", source)
            return entry
        log.debug("JWK Set %s taken from the cache: %d key(s)", source, len(keys))
        entry = _Entry(keys, canonical_jwks(keys), expires_at)
        self._entries[source] = entry
        return entry

    async def _load(self, source: KeySource) -> dict[str, Jwk]:
        if source.kind == "file":
            return read_jwks_file(Path(source.location))
        try:
            response = await self._client().get(
                source.location, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise JwksError(f"fetch failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise JwksError(f"fetch answered HTTP {response.status_code}")
        if len(response.content) > MAX_JWKS_BYTES:
            raise JwksError("JWK Set too large")
        try:
            return parse_jwks(response.json())
        except ValueError:
            raise JwksError("JWK Set is not JSON") from None
