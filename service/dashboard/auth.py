"""Who may read the dashboard: HTTP Basic against an scrypt hash from the config, or the user
named by a trusted authenticating reverse proxy. A CDS client's JWT is never looked at.

The key derivation is the standard library's scrypt; comparisons are `hmac.compare_digest`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request

from service.config import ADMIN_PASSWORD_HASH, AdminSettings

log = logging.getLogger("service.dashboard")

# OWASP's scrypt row for 32 MiB: N = 2^15, r = 8, p = 3 (~0.1-0.3 s a verification).
DEFAULT_LOG2_N, DEFAULT_R, DEFAULT_P = 15, 8, 3
SALT_BYTES, KEY_BYTES = 16, 32
CHALLENGE = {"WWW-Authenticate": 'Basic realm="cardiac-ct-cds admin", charset="UTF-8"'}
# A browser sends the same Basic credential with every request of a page; remembering that it
# was right for a few minutes (an HMAC of it under a per-process random key) spares a KDF run
# per request. Wrong credentials are never remembered: each costs a full scrypt.
VERIFIED_TTL_SECONDS = 300.0
_VERIFIED_MAX = 64
_CONCURRENT_KDF = 2  # bounds memory (32 MiB each) and CPU under a guessing attack
_MAX_PROXY_USER = 200
# Password guessing: after this many wrong credentials from one address within the window, that
# address gets 429 (no password check at all) until the window has passed.
MAX_FAILURES = 10
FAILURE_WINDOW_SECONDS = 300.0
_TRACKED_ADDRESSES = 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int, length: int) -> bytes:
    n = 1 << log2_n
    # OpenSSL needs 128 * r * (N + p + 2) bytes; its default cap is 32 MiB.
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length
    )


def hash_password(
    password: str, *, log2_n: int = DEFAULT_LOG2_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> str:
    """`$scrypt$ln=15,r=8,p=3$<salt>$<key>`: what `admin.password_hash` holds."""
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, log2_n, r, p, KEY_BYTES)
    return f"$scrypt$ln={log2_n},r={r},p={p}${_b64(salt)}${_b64(key)}"


@dataclass(frozen=True)
class PasswordHash:
    log2_n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        found = ADMIN_PASSWORD_HASH.match(text)
        if not found:
            raise ValueError("not an scrypt hash made by `cardiac-ct-cds admin-password`")
        try:
            salt, key = _unb64(found["salt"]), _unb64(found["key"])
        except binascii.Error as exc:
            raise ValueError("the scrypt hash's salt or key is not base64") from exc
        return cls(int(found["ln"]), int(found["r"]), int(found["p"]), salt, key)

    def verify(self, password: str) -> bool:
        candidate = _scrypt(password, self.salt, self.log2_n, self.r, self.p, len(self.key))
        return hmac.compare_digest(candidate, self.key)


class AdminAuth:
    """Checks every request of the admin app; `user` answers who, or None (then 401)."""

    def __init__(self, settings: AdminSettings) -> None:
        self.username = settings.username.encode("utf-8")
        self.password = (
            PasswordHash.parse(settings.password_hash) if settings.password_hash else None
        )
        self.proxy_header = settings.trusted_proxy_header
        self.proxies = tuple(settings.trusted_proxies)
        self._mac_key = secrets.token_bytes(32)
        self._verified: dict[bytes, float] = {}
        self._kdf_slots = asyncio.Semaphore(_CONCURRENT_KDF)
        self._failures: dict[str, list[float]] = {}  # client address -> recent failure times

    async def __call__(self, request: Request) -> str:
        """The FastAPI dependency every admin route has."""
        address = request.client.host if request.client else "?"
        if self._throttled(address):
            raise HTTPException(
                429,
                "too many wrong credentials from this address; try again later",
                headers={"Retry-After": str(int(FAILURE_WINDOW_SECONDS))},
            )
        user = await self.user(request)
        if user is None:
            if request.headers.get("authorization"):
                self._failed(address)
            raise HTTPException(401, "authentication required", headers=CHALLENGE)
        request.state.admin_user = user
        return user

    async def user(self, request: Request) -> str | None:
        if self.proxy_header and self._from_trusted_proxy(request):
            named = request.headers.get(self.proxy_header, "").strip()
            if named and len(named) <= _MAX_PROXY_USER and named.isprintable():
                return f"proxy:{named}"
        return await self._basic_user(request.headers.get("authorization"))

    def _from_trusted_proxy(self, request: Request) -> bool:
        # The TCP peer itself: the admin server never rewrites it from X-Forwarded-For.
        if request.client is None:
            return False
        try:
            address = ipaddress.ip_address(request.client.host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.proxies)

    async def _basic_user(self, header: str | None) -> str | None:
        if self.password is None or not header:
            return None
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "basic":  # a Bearer token (a CDS client's JWT) is never read
            return None
        try:
            user, colon, password = _unb64(credential.strip()).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not colon:
            return None
        fingerprint = hmac.new(self._mac_key, credential.strip().encode(), "sha256").digest()
        now = time.monotonic()
        if self._verified.get(fingerprint, 0.0) > now:
            return user
        async with self._kdf_slots:
            right = await asyncio.to_thread(self._check, user, password)
        if not right:
            log.warning("dashboard: wrong admin credential")
            return None
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified = {k: t for k, t in self._verified.items() if t > now}
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
        self._verified[fingerprint] = now + VERIFIED_TTL_SECONDS
        return user

    def _recent(self, address: str) -> list[float]:
        cutoff = time.monotonic() - FAILURE_WINDOW_SECONDS
        recent = [t for t in self._failures.get(address, []) if t > cutoff]
        if recent:
            self._failures[address] = recent
        else:
            self._failures.pop(address, None)
        return recent

    def _throttled(self, address: str) -> bool:
        return len(self._recent(address)) >= MAX_FAILURES

    def _failed(self, address: str) -> None:
        if address not in self._failures and len(self._failures) >= _TRACKED_ADDRESSES:
            for known in list(self._failures):  # forget addresses whose failures are old
                self._recent(known)
            if len(self._failures) >= _TRACKED_ADDRESSES:
                self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(address, []).append(time.monotonic())

    def _check(self, user: str, password: str) -> bool:
        if self.password is None:
            return False
        user_right = hmac.compare_digest(user.encode("utf-8"), self.username)
        password_right = self.password.verify(password)  # always run: no timing shortcut
        return user_right and password_right
