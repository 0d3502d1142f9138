"""A local development CDS client: a key pair generated once under `state_dir/dev-client/`.

It lets a developer call the service with real signed JWTs (`cardiac-ct-cds dev-token`) instead
of switching authentication off. The configuration refuses it in production.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from service.config import Settings, TrustedClient

log = logging.getLogger(__name__)

DEV_ISSUER = "urn:cardiac-ct-cds:dev-client"
DEV_ALGORITHM = "ES384"
PRIVATE_KEY_FILE = "private-key.pem"
JWKS_FILE = "jwks.json"


class DevClientError(Exception):
    """The dev client key material is unusable (e.g. readable by other users)."""


@dataclass(frozen=True)
class DevClientKeys:
    private_key: ec.EllipticCurvePrivateKey
    kid: str
    jwks_file: Path


def _thumbprint(public_jwk: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint: a stable `kid` derived from the key itself."""
    canonical = json.dumps(
        {k: public_jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _create_private_key(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: two processes starting at once must not overwrite each other's key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    log.warning("generated dev client key pair in %s", path.parent)


def ensure_dev_client(state_dir: Path) -> DevClientKeys:
    """Load the dev key pair, generating it on first use; (re)write its public JWK Set."""
    directory = state_dir / "dev-client"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path = directory / PRIVATE_KEY_FILE
    if not private_path.exists():
        try:
            _create_private_key(private_path)
        except FileExistsError:
            pass  # another process won the race; use its key
    mode = stat.S_IMODE(private_path.stat().st_mode)
    if mode & 0o077:
        raise DevClientError(
            f"{private_path} is accessible by other users (mode {mode:o}); run chmod 600 on it"
        )
    loaded = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp384r1":
        raise DevClientError(f"{private_path} is not a P-384 EC private key")
    public_jwk: dict[str, str] = ECAlgorithm.to_jwk(loaded.public_key(), as_dict=True)
    kid = _thumbprint(public_jwk)
    public_jwk.update({"kid": kid, "alg": DEV_ALGORITHM, "use": "sig"})
    jwks_path = directory / JWKS_FILE
    jwks_path.write_text(json.dumps({"keys": [public_jwk]}, indent=2) + "\n", encoding="utf-8")
    return DevClientKeys(loaded, kid, jwks_path)


def dev_trusted_client(settings: Settings, keys: DevClientKeys) -> TrustedClient:
    return TrustedClient(
        issuer=DEV_ISSUER,
        jwks_file=keys.jwks_file,
        algorithms=[DEV_ALGORITHM],
        fhir_servers=list(settings.auth.dev_client_fhir_servers),
    )


def sign_dev_token(
    keys: DevClientKeys, audience: str, *, lifetime_seconds: int = 300, now: float | None = None
) -> str:
    """A CDS Hooks client JWT for `audience` (the exact URL to be called), valid 5 minutes."""
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": DEV_ISSUER,
        "aud": audience,
        "iat": issued,
        "exp": issued + lifetime_seconds,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(
        claims, keys.private_key, algorithm=DEV_ALGORITHM, headers={"kid": keys.kid, "typ": "JWT"}
    )
