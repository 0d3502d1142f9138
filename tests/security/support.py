"""Test CDS clients: key pairs generated at test time, their JWK Sets, and token minting.

Attack tokens (alg none, HS256 with the public key as secret) are assembled by hand here because
a correct JWT library refuses to produce them; that is the attacker's side, not ours.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import SERVICE_BASE

ISSUER = "https://ehr.example.org/"
DISCOVERY_URL = f"{SERVICE_BASE}/cds-services"
SERVICE_PATH = "/cds-services/cardiac-ct-order-sign"
FEEDBACK_PATH = f"{SERVICE_PATH}/feedback"
JWKS_HOST = "http://keys.test"
JWKS_URL = f"{JWKS_HOST}/.well-known/jwks.json"

EMPTY_401 = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]}


@dataclass
class ClientKey:
    kid: str
    alg: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        algorithm = ECAlgorithm if self.alg.startswith("ES") else RSAAlgorithm
        jwk: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return jwk

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def ec_key(kid: str = "ec-1", alg: str = "ES384") -> ClientKey:
    curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1()}[alg]
    return ClientKey(kid, alg, ec.generate_private_key(curve))


def rsa_key(kid: str = "rsa-1", alg: str = "RS384") -> ClientKey:
    return ClientKey(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def jwks(*keys: ClientKey) -> dict[str, Any]:
    return {"keys": [k.public_jwk() for k in keys]}


def write_jwks(path: Path, *keys: ClientKey) -> Path:
    path.write_text(json.dumps(jwks(*keys)), encoding="utf-8")
    return path


def claims(aud: Any, *, iss: str = ISSUER, lifetime: int = 300, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}  # None drops a claim


def mint(
    key: ClientKey,
    aud: Any,
    *,
    headers: dict[str, Any] | None = None,
    drop_headers: Iterable[str] = (),
    **claim_overrides: Any,
) -> str:
    """A token signed by `key`; header `kid`/`typ` set unless dropped or overridden."""
    header: dict[str, Any] = {"kid": key.kid, "typ": "JWT", **(headers or {})}
    for name in drop_headers:
        header.pop(name, None)
    if "typ" in drop_headers:
        header["typ"] = None  # PyJWT adds typ=JWT unless told None
    return jwt.encode(
        claims(aud, **claim_overrides), key.private, algorithm=key.alg, headers=header
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(aud: str, kid: str) -> str:
    """alg=none: no signature at all."""
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims(aud)).encode())}."


def hs256_token(aud: str, kid: str, secret: bytes) -> str:
    """HS256 signed with `secret` (e.g. the client's public key PEM: the classic confusion)."""
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims(aud)).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def tamper_payload(token: str, **changes: Any) -> str:
    """Same header and signature, different claims."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    return f"{header}.{_b64(json.dumps(data).encode())}.{signature}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auth_settings(**auth: Any) -> dict[str, Any]:
    """An `auth` section with auth on and no dev client, merged with `auth`."""
    return {"enabled": True, "dev_client": False, **auth}


def one_trusted_client(tmp_path: Path, **client: Any) -> tuple[dict[str, Any], ClientKey]:
    """A fresh EC key, and an `auth` section trusting it as client `ISSUER` via a JWKS file.

    `client` adds to that client's entry (its `fhir_servers`, say).
    """
    key = ec_key()
    path = write_jwks(tmp_path / "jwks.json", key)
    return auth_settings(clients=[{"issuer": ISSUER, "jwks_file": str(path), **client}]), key


@dataclass
class JwksServer:
    """A tiny HTTP server for JWK Sets (a real exchange over an httpx ASGI transport)."""

    documents: dict[str, Any] = field(default_factory=dict)  # path -> JSON, or int status
    requests: list[str] = field(default_factory=list)  # full URLs, in order

    def transport(self) -> httpx.ASGITransport:
        async def serve(request: Request) -> Response:
            self.requests.append(str(request.url))
            document = self.documents.get(request.url.path)
            if document is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            if isinstance(document, int):
                return Response("unavailable", status_code=document)
            return JSONResponse(document)

        app = Starlette(routes=[Route("/{path:path}", serve)])
        return httpx.ASGITransport(app=app)


FEEDBACK = {
    "feedback": [
        {
            "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-23T10:00:00Z",
        }
    ]
}


class RecordingTransport(httpx.AsyncBaseTransport):
    """Records every outbound request; without an inner transport any request is a failure."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.inner is None:
            raise AssertionError(f"SSRF: outbound request to {request.url.host}")
        return await self.inner.handle_async_request(request)
