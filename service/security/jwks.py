"""Public keys of trusted CDS clients (JWK Sets), from a file or an allowlisted URL.

Spec: https://cds-hooks.hl7.org/2.0/#trusting-cds-clients ("jku ... JWK Set URL").
Fetched sets are cached per source in-process for `jwks_cache_seconds`; an unknown `kid` causes
at most one refetch per `jwks_min_refresh_seconds`, so key rotation works but forged tokens
cannot make us hammer a client's endpoint. If a refetch fails the last good set stays in use.
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


@dataclass
class _Entry:
    keys: dict[str, Jwk]
    fetched_at: float | None  # last success
    attempted_at: float  # last attempt, successful or not


class JwksStore:
    """Looks up a client's public key by (source, kid), fetching and caching JWK Sets."""

    def __init__(
        self,
        http: httpx.AsyncClient | None,
        *,
        cache_seconds: float,
        min_refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Created on first fetch when not given: file-only setups never open an HTTP client.
        self._http = http
        self._own_http: httpx.AsyncClient | None = None
        self._cache_seconds = cache_seconds
        self._min_refresh = min_refresh_seconds
        self._clock = clock
        self._entries: dict[KeySource, _Entry] = {}
        self._locks: dict[KeySource, asyncio.Lock] = {}

    async def aclose(self) -> None:
        if self._own_http is not None:
            await self._own_http.aclose()
            self._own_http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is not None:
            return self._http
        if self._own_http is None:
            self._own_http = httpx.AsyncClient(follow_redirects=False, timeout=5.0)
        return self._own_http

    def preload_file(self, path: Path) -> int:
        """Read a key file at startup so a missing or broken file stops the service early."""
        source = KeySource("file", str(path))
        keys = read_jwks_file(path)
        if not keys:
            raise JwksError(f"JWK Set {path} holds no usable signing key")
        now = self._clock()
        self._entries[source] = _Entry(keys, now, now)
        return len(keys)

    async def find(self, source: KeySource, kid: str) -> Jwk | None:
        entry = self._entries.get(source)
        if entry is None or self._stale(entry):
            entry = await self._refresh(source, entry)
        if entry is not None and kid in entry.keys:
            return entry.keys[kid]
        # Unknown kid: maybe the client rotated its keys. One refetch, rate-limited.
        entry = await self._refresh(source, entry)
        return entry.keys.get(kid) if entry is not None else None

    def _stale(self, entry: _Entry) -> bool:
        if entry.fetched_at is None:
            return True
        return self._clock() - entry.fetched_at >= self._cache_seconds

    async def _refresh(self, source: KeySource, seen: _Entry | None) -> _Entry | None:
        lock = self._locks.setdefault(source, asyncio.Lock())
        async with lock:
            entry = self._entries.get(source)
            if entry is not None and entry is not seen:
                return entry  # another request refreshed while we waited
            if entry is not None and self._clock() - entry.attempted_at < self._min_refresh:
                return entry
            now = self._clock()
            try:
                keys = await self._load(source)
            except JwksError as exc:
                log.warning("JWK Set %s not refreshed: %s", source, exc)
                old = entry.keys if entry is not None else {}
                fetched = entry.fetched_at if entry is not None else None
                self._entries[source] = _Entry(old, fetched, now)
            else:
                log.info("JWK Set %s loaded: %d key(s)", source, len(keys))
                self._entries[source] = _Entry(keys, now, now)
            return self._entries[source]

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
