"""Who is calling: CDS client authentication (signed JWT) and what that client may reach.

Spec: https://cds-hooks.hl7.org/2.0/#trusting-cds-clients
Every check failing raises `Unauthorized`; the route answers 401 with no detail. Tokens are
never logged: issuer, kid and jti at most.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpx
import jwt
from jwt.exceptions import PyJWTError

from service.config import FhirServerAllowance, Settings, TrustedClient
from service.security.dev_client import dev_trusted_client, ensure_dev_client
from service.security.jwks import JwksStore, KeySource
from service.security.jwks_cache import KeySetCache, build_key_set_cache
from service.security.replay import (
    InMemoryReplayCache,
    ReplayCache,
    ReplayCacheUnavailable,
    build_replay_cache,
)
from service.security.urls import normalize_base_url

log = logging.getLogger(__name__)

# CDS Hooks 2.0: `none` and every HS* SHALL NOT be used. Enforced here whatever the config says.
ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS384"})
MAX_TOKEN_CHARS = 8192
MAX_JTI_CHARS = 256
_REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]


class Unauthorized(Exception):
    """Authentication failed. The reason is for tests and debug logs only, never the client."""


@dataclass(frozen=True)
class Caller:
    """An authenticated CDS client (or the anonymous caller when auth is disabled)."""

    issuer: str | None
    jti: str | None
    fhir_servers: tuple[FhirServerAllowance, ...]

    def fhir_allowance(self, fhir_server: str) -> FhirServerAllowance | None:
        """The allowlist entry for `fhir_server`, or None: then it must never be contacted.

        Compared as normalised scheme+host+port+path; userinfo, query, fragment or dot segments
        never match. Callers should contact the returned entry's `base_url`, not the input.
        """
        wanted = normalize_base_url(fhir_server)
        if wanted is None:
            return None
        return next(
            (a for a in self.fhir_servers if normalize_base_url(a.base_url) == wanted), None
        )


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization is not a Bearer token")
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2 or " " in token:
        raise Unauthorized("bearer token is not a compact JWS")
    return token


class Authenticator:
    """Verifies the `Authorization: Bearer <JWT>` of each call against the trusted clients."""

    def __init__(
        self,
        settings: Settings,
        clients: list[TrustedClient] | None = None,
        *,
        http: httpx.AsyncClient | None = None,
        replay: ReplayCache | None = None,
        key_sets: KeySetCache | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients if clients is not None else list(settings.auth.clients)
        self._by_issuer: dict[str, TrustedClient] = {}
        for client in self.clients:
            if client.issuer in self._by_issuer:
                raise ValueError(f"trusted client issuer {client.issuer!r} is configured twice")
            self._by_issuer[client.issuer] = client
        if settings.environment == "production":
            _require_https(self.clients)
        self.replay: ReplayCache = replay or InMemoryReplayCache()
        self.keys = JwksStore(
            http,
            cache_seconds=settings.auth.jwks_cache_seconds,
            min_refresh_seconds=settings.auth.jwks_min_refresh_seconds,
            shared=key_sets,
        )
        if settings.auth.enabled:
            for client in self.clients:
                if client.jwks_file is not None:
                    self.keys.preload_file(client.jwks_file)

    async def aclose(self) -> None:
        await self.replay.aclose()
        await self.keys.aclose()

    async def authenticate(self, authorization: str | None, audience: str) -> Caller:
        auth = self.settings.auth
        if not auth.enabled:
            return Caller(None, None, tuple(auth.unauthenticated_fhir_servers))
        token = _bearer_token(authorization)
        try:
            # One unverified parse for header and issuer; the signature is checked below.
            parts = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
        except PyJWTError:
            raise Unauthorized("malformed JWT") from None
        header: dict[str, Any] = parts["header"]
        unverified: dict[str, Any] = parts["payload"]
        _check_claim_types(unverified)
        alg, kid = header.get("alg"), header.get("kid")
        if header.get("typ") != "JWT":
            raise Unauthorized("header typ is not JWT")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("header kid missing")
        if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS:
            raise Unauthorized("alg not allowed")
        issuer = unverified.get("iss")
        client = self._by_issuer.get(issuer) if isinstance(issuer, str) else None
        if client is None:
            raise Unauthorized("issuer not trusted")
        if alg not in client.algorithms:
            raise Unauthorized(f"alg {alg} not allowed for issuer {client.issuer}")
        key = await self._public_key(client, header, kid, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=audience,
                issuer=client.issuer,
                leeway=auth.clock_skew_seconds,
                options={"require": _REQUIRED_CLAIMS},
            )
        except PyJWTError as exc:
            raise Unauthorized(f"JWT rejected: {type(exc).__name__}") from None
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
            raise Unauthorized("jti missing or not a string")
        exp, iat = float(claims["exp"]), float(claims["iat"])
        if not 0 < exp - iat <= auth.max_token_lifetime_seconds:
            raise Unauthorized(f"token lifetime {exp - iat:.0f}s not allowed")
        try:
            first = await self.replay.first_use(client.issuer, jti, exp + auth.clock_skew_seconds)
        except ReplayCacheUnavailable:
            raise Unauthorized("replay cache unavailable") from None
        if not first:
            log.warning("replayed jti refused: iss=%s jti=%s", client.issuer, _shown(jti))
            raise Unauthorized("jti already used")
        log.debug("authenticated iss=%s kid=%s jti=%s", client.issuer, _shown(kid), _shown(jti))
        return Caller(client.issuer, jti, tuple(client.fhir_servers))

    async def _public_key(
        self, client: TrustedClient, header: dict[str, Any], kid: str, alg: str
    ) -> jwt.PyJWK:
        # The issuer's configured keys are always tried, whatever the token's `jku` says (the
        # CDS Hooks sandbox always sends one; a site pins its key set offline). An allowlisted
        # `jku` is one more place to look, never the only one; any other `jku` is not fetched.
        sources: list[KeySource] = []
        if client.jwks_file is not None:
            sources.append(KeySource("file", str(client.jwks_file)))
        if client.jwks_url is not None:
            sources.append(KeySource("url", client.jwks_url))
        jku = header.get("jku")
        allowed = isinstance(jku, str) and jku in client.allowed_jku
        if allowed and jku != client.jwks_url:
            sources.append(KeySource("url", str(jku)))
        elif jku is not None and not allowed:
            log.info("jku not allowlisted for issuer %s: not fetched", client.issuer)
        for source in sources:
            jwk = await self.keys.find(source, kid)
            if jwk is None:
                continue
            if jwk.get("alg", alg) != alg:
                raise Unauthorized(f"kid {_shown(kid)} is registered for another alg")
            try:
                return _key_object(json.dumps(jwk, sort_keys=True), alg)
            except PyJWTError:
                raise Unauthorized(f"kid {_shown(kid)} does not fit alg {alg}") from None
        raise Unauthorized(f"unknown kid {_shown(kid)} for issuer {client.issuer}")


def _check_claim_types(claims: dict[str, Any]) -> None:
    """CDS Hooks 2.0: `aud` is the URL of the endpoint called, a string (an array, even one
    naming it, is refused). RFC 7519: `exp`, `iat` (and `nbf`) are NumericDate JSON numbers, not
    strings or booleans. PyJWT would accept either."""
    if "aud" in claims and not isinstance(claims["aud"], str):
        raise Unauthorized("aud is not a string")
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise Unauthorized(f"{name} is not a number")


@lru_cache(maxsize=256)
def _key_object(jwk_json: str, alg: str) -> jwt.PyJWK:
    """A JWK turned into a key object once, not on every call: keyed by the JWK's content, so a
    rotated key set (new content under the same kid) is parsed anew."""
    return jwt.PyJWK(json.loads(jwk_json), algorithm=alg)


def _shown(value: str) -> str:
    """Client-chosen strings (kid, jti) as they may appear in logs: short, quoted, escaped."""
    return repr(value[:64])


def _require_https(clients: list[TrustedClient]) -> None:
    for client in clients:
        for url in [client.jwks_url, *client.allowed_jku]:
            if url is not None and not url.startswith("https://"):
                raise ValueError(f"client {client.issuer!r}: key URL {url!r} must be https")


def build_authenticator(settings: Settings, *, http: httpx.AsyncClient) -> Authenticator:
    """The app's authenticator: configured clients, the dev client if enabled, and the replay
    and key-set caches (Redis when configured, so replicas share them)."""
    clients = list(settings.auth.clients)
    if settings.auth.enabled and settings.auth.dev_client:
        keys = ensure_dev_client(settings.state_dir)
        clients.append(dev_trusted_client(settings, keys))
        log.warning(
            "DEV CLIENT TRUSTED: tokens signed by the key in %s (issuer %s) are accepted. "
            "Development only; never with real patient data.",
            keys.jwks_file.parent,
            clients[-1].issuer,
        )
    redis_url = settings.cache.redis_url if settings.auth.enabled else None
    replay = build_replay_cache(
        redis_url, settings.cache.key_prefix, settings.auth.replay_cache_max_entries
    )
    key_sets = build_key_set_cache(redis_url, settings.cache.key_prefix)
    log.info(
        "auth: %d trusted client(s), replay and key-set caches %s",
        len(clients),
        "redis" if redis_url else "in-process",
    )
    return Authenticator(settings, clients, http=http, replay=replay, key_sets=key_sets)


def check_auth_config(settings: Settings) -> int:
    """What startup would refuse, without serving: unreadable key files, duplicate issuers,
    plain-http key URLs in production. Returns the number of configured clients."""
    return len(Authenticator(settings).clients)
