"""CDS client JWT authentication over HTTP: valid tokens pass, every attack gets a bare 401.

Spec: https://cds-hooks.hl7.org/2.0/#trusting-cds-clients. Each attack is also run against the
Authenticator directly to check it fails for the intended reason, not by accident.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from service.config import Settings
from service.security.auth import Authenticator, Unauthorized
from tests.api.test_invoke_smoke import REQUEST
from tests.conftest import SERVICE_BASE
from tests.security.support import (
    DISCOVERY_URL,
    EMPTY_401,
    FEEDBACK,
    FEEDBACK_PATH,
    ISSUER,
    SERVICE_PATH,
    ClientKey,
    auth_settings,
    bearer,
    ec_key,
    hs256_token,
    mint,
    rsa_key,
    tamper_payload,
    unsigned_token,
    write_jwks,
)
from tests.support.conformance import assert_conformant_response, topics

SERVICE_URL = f"{SERVICE_BASE}{SERVICE_PATH}"
FEEDBACK_URL = f"{SERVICE_BASE}{FEEDBACK_PATH}"


class Keys:
    """The trusted client's registered keys, plus keys nobody registered."""

    def __init__(self) -> None:
        self.ec = ec_key("ec-1", "ES384")
        self.rsa = rsa_key("rsa-1", "RS384")
        self.es256 = ec_key("ec256-1", "ES256")  # registered, but ES256 is not allowed
        self.stranger = ec_key("ec-unknown", "ES384")
        self.impostor = ec_key("ec-1", "ES384")  # claims the registered kid, other key


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def secured(make_settings: Any, tmp_path: Any, keys: Keys) -> Settings:
    path = write_jwks(tmp_path / "ehr-jwks.json", keys.ec, keys.rsa, keys.es256)
    settings: Settings = make_settings(
        auth=auth_settings(clients=[{"issuer": ISSUER, "jwks_file": str(path)}])
    )
    return settings


@pytest.mark.parametrize("which", ["ec", "rsa"])
async def test_valid_tokens_accepted_on_every_endpoint(
    secured: Settings, app_client: Any, keys: Keys, which: str
) -> None:
    key: ClientKey = getattr(keys, which)
    async with app_client(secured) as client:
        discovery = await client.get("/cds-services", headers=bearer(mint(key, DISCOVERY_URL)))
        invoke = await client.post(
            SERVICE_PATH, json=REQUEST, headers=bearer(mint(key, SERVICE_URL))
        )
        feedback = await client.post(
            FEEDBACK_PATH, json=FEEDBACK, headers=bearer(mint(key, FEEDBACK_URL))
        )
    assert discovery.status_code == 200, discovery.text
    assert {s["id"] for s in discovery.json()["services"]} >= {"cardiac-ct-order-sign"}
    assert invoke.status_code == 200, invoke.text
    assert_conformant_response(invoke.json())
    assert "cac-bundling-conflict" in topics(invoke.json())
    assert feedback.status_code == 200, feedback.text


async def test_small_clock_skew_accepted(secured: Settings, app_client: Any, keys: Keys) -> None:
    now = int(time.time())
    just_expired = mint(keys.ec, DISCOVERY_URL, iat=now - 200, exp=now - 10)  # skew is 30 s
    async with app_client(secured) as client:
        response = await client.get("/cds-services", headers=bearer(just_expired))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": [DISCOVERY_URL]},
        {"aud": ["https://other.example/x", DISCOVERY_URL]},
        {"exp": "__EXP_AS_STRING__"},
        {"iat": "__IAT_AS_STRING__"},
        {"exp": True},
    ],
    ids=["aud-array", "aud-array-two", "exp-string", "iat-string", "exp-bool"],
)
async def test_claims_have_the_types_cds_hooks_and_rfc7519_give_them(
    secured: Settings, app_client: Any, keys: Keys, claims: dict[str, Any]
) -> None:
    """Issue 10 item 5: CDS Hooks defines `aud` as the endpoint URL (a string); RFC 7519
    NumericDate is a JSON number."""
    now = int(time.time())
    given = {
        k: (
            str(now + 200)
            if v == "__EXP_AS_STRING__"
            else str(now)
            if v == "__IAT_AS_STRING__"
            else v
        )
        for k, v in claims.items()
    }
    token = mint(keys.ec, given.pop("aud", DISCOVERY_URL), **given)
    async with app_client(secured) as client:
        response = await client.get("/cds-services", headers=bearer(token))
    assert response.status_code == 401


def _now() -> int:
    return int(time.time())


# (id, token builder, reason fragment the Authenticator must give)
ATTACKS: list[tuple[str, Callable[[Keys], str], str]] = [
    ("alg-none", lambda k: unsigned_token(SERVICE_URL, "ec-1"), "alg not allowed"),
    ("hs256", lambda k: hs256_token(SERVICE_URL, "ec-1", b"s" * 64), "alg not allowed"),
    (
        "hs256-public-key-pem-as-secret",
        lambda k: hs256_token(SERVICE_URL, "ec-1", k.ec.public_pem()),
        "alg not allowed",
    ),
    (
        "hs256-public-jwk-as-secret",
        lambda k: hs256_token(SERVICE_URL, "rsa-1", json.dumps(k.rsa.public_jwk()).encode()),
        "alg not allowed",
    ),
    (
        "wrong-aud-other-service",
        lambda k: mint(k.ec, f"{SERVICE_BASE}/cds-services/other"),
        "InvalidAudience",
    ),
    ("wrong-aud-discovery-url", lambda k: mint(k.ec, DISCOVERY_URL), "InvalidAudience"),
    (
        "wrong-aud-other-host",
        lambda k: mint(k.ec, f"https://cds.evil.example{SERVICE_PATH}"),
        "InvalidAudience",
    ),
    (
        "expired",
        lambda k: mint(k.ec, SERVICE_URL, iat=_now() - 400, exp=_now() - 100),
        "ExpiredSignature",
    ),
    (
        "iat-in-future",
        lambda k: mint(k.ec, SERVICE_URL, iat=_now() + 120, exp=_now() + 400),
        "ImmatureSignature",
    ),
    ("lifetime-too-long", lambda k: mint(k.ec, SERVICE_URL, lifetime=3600), "lifetime"),
    ("missing-jti", lambda k: mint(k.ec, SERVICE_URL, jti=None), "MissingRequiredClaim"),
    ("empty-jti", lambda k: mint(k.ec, SERVICE_URL, jti=""), "jti"),
    ("missing-exp", lambda k: mint(k.ec, SERVICE_URL, exp=None), "MissingRequiredClaim"),
    ("missing-iat", lambda k: mint(k.ec, SERVICE_URL, iat=None), "MissingRequiredClaim"),
    ("missing-aud", lambda k: mint(k.ec, None), "MissingRequiredClaim"),
    ("unknown-kid", lambda k: mint(k.stranger, SERVICE_URL), "unknown kid"),
    ("known-kid-wrong-key", lambda k: mint(k.impostor, SERVICE_URL), "InvalidSignature"),
    (
        "untrusted-iss",
        lambda k: mint(k.ec, SERVICE_URL, iss="https://evil.example/"),
        "issuer not trusted",
    ),
    ("missing-iss", lambda k: mint(k.ec, SERVICE_URL, iss=None), "issuer not trusted"),
    (
        # A jku the issuer did not allowlist is never fetched, so a key only it serves is unknown.
        "jku-not-allowlisted-unknown-key",
        lambda k: mint(k.stranger, SERVICE_URL, headers={"jku": "https://evil.example/jwks.json"}),
        "unknown kid",
    ),
    (
        "tampered-payload",
        lambda k: tamper_payload(mint(k.ec, SERVICE_URL), jti="chosen-by-attacker"),
        "InvalidSignature",
    ),
    (
        "tampered-issuer-kept-signature",
        lambda k: tamper_payload(mint(k.ec, SERVICE_URL), tenant="other-tenant"),
        "InvalidSignature",
    ),
    ("missing-kid", lambda k: mint(k.ec, SERVICE_URL, drop_headers=["kid"]), "kid missing"),
    ("missing-typ", lambda k: mint(k.ec, SERVICE_URL, drop_headers=["typ"]), "typ"),
    ("wrong-typ", lambda k: mint(k.ec, SERVICE_URL, headers={"typ": "at+jwt"}), "typ"),
    ("alg-not-allowed-for-client", lambda k: mint(k.es256, SERVICE_URL), "not allowed for"),
    (
        "rsa-alg-on-ec-kid",
        lambda k: mint(ClientKey("ec-1", "RS384", k.rsa.private), SERVICE_URL),
        "another alg",
    ),
]


@pytest.mark.parametrize(("build", "reason"), [a[1:] for a in ATTACKS], ids=[a[0] for a in ATTACKS])
async def test_attack_gets_bare_401(
    secured: Settings,
    app_client: Any,
    keys: Keys,
    build: Callable[[Keys], str],
    reason: str,
) -> None:
    token = build(keys)
    async with app_client(secured) as client:
        response = await client.post(SERVICE_PATH, json=REQUEST, headers=bearer(token))
    assert response.status_code == 401
    assert response.json() == EMPTY_401
    assert response.headers["www-authenticate"] == "Bearer"

    authenticator = Authenticator(secured)
    try:
        with pytest.raises(Unauthorized, match=reason):
            await authenticator.authenticate(f"Bearer {build(keys)}", SERVICE_URL)
    finally:
        await authenticator.aclose()


BAD_HEADERS = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Basic dXNlcjpwYXNzd29yZA==",
    "Bearer not-a-jwt",
    "Bearer a.b.c",
    "Bearer ...",
    "Bearer eyJhbGciOiJFUzM4NCJ9.%%%%.####",
    "Bearer " + "a" * 9000 + ".b.c",
]


@pytest.mark.parametrize("header", BAD_HEADERS)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/cds-services", None),
        ("POST", SERVICE_PATH, REQUEST),
        ("POST", FEEDBACK_PATH, FEEDBACK),
    ],
    ids=["discovery", "invoke", "feedback"],
)
async def test_missing_or_garbled_authorization(
    secured: Settings,
    app_client: Any,
    header: str | None,
    method: str,
    path: str,
    body: Any,
) -> None:
    headers = {} if header is None else {"Authorization": header}
    async with app_client(secured) as client:
        response = await client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == EMPTY_401


async def test_valid_token_with_wrong_scheme_is_refused(
    secured: Settings, app_client: Any, keys: Keys
) -> None:
    async with app_client(secured) as client:
        response = await client.get(
            "/cds-services", headers={"Authorization": f"Token {mint(keys.ec, DISCOVERY_URL)}"}
        )
    assert response.status_code == 401


async def test_replayed_token_refused(secured: Settings, app_client: Any, keys: Keys) -> None:
    token = mint(keys.ec, SERVICE_URL)
    async with app_client(secured) as client:
        first = await client.post(SERVICE_PATH, json=REQUEST, headers=bearer(token))
        second = await client.post(SERVICE_PATH, json=REQUEST, headers=bearer(token))
    assert first.status_code == 200, first.text
    assert second.status_code == 401
    assert second.json() == EMPTY_401


async def test_rejected_token_does_not_burn_its_jti(
    secured: Settings, app_client: Any, keys: Keys
) -> None:
    """Replay entries are written only after full verification: a forged copy of a jti
    must not lock out the genuine token."""
    genuine_claims_jti = "shared-jti-1"
    forged = mint(keys.impostor, SERVICE_URL, jti=genuine_claims_jti)
    genuine = mint(keys.ec, SERVICE_URL, jti=genuine_claims_jti)
    async with app_client(secured) as client:
        refused = await client.post(SERVICE_PATH, json=REQUEST, headers=bearer(forged))
        accepted = await client.post(SERVICE_PATH, json=REQUEST, headers=bearer(genuine))
    assert refused.status_code == 401
    assert accepted.status_code == 200, accepted.text


async def test_tokens_are_not_logged(
    secured: Settings, app_client: Any, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    good = mint(keys.ec, SERVICE_URL)
    bad = mint(keys.impostor, SERVICE_URL)
    async with app_client(secured) as client:
        for token in (good, good, bad):
            await client.post(SERVICE_PATH, json=REQUEST, headers=bearer(token))
    logged = caplog.text
    assert logged  # something was logged, so the check below means something
    for token in (good, bad):
        for part in token.split("."):
            assert part not in logged


@pytest.mark.parametrize("path", ["/cds-services/no-such-service", "/cds-services/nope/feedback"])
async def test_unknown_service_ids_are_not_revealed_without_a_token(
    secured: Settings, app_client: Any, keys: Keys, path: str
) -> None:
    body = FEEDBACK if path.endswith("/feedback") else REQUEST
    async with app_client(secured) as client:
        anonymous = await client.post(path, json=body)
        authenticated = await client.post(
            path, json=body, headers=bearer(mint(keys.ec, f"{SERVICE_BASE}{path}"))
        )
    assert anonymous.status_code == 401
    assert anonymous.json() == EMPTY_401
    assert authenticated.status_code == 404


async def test_client_chosen_kid_cannot_forge_log_lines(
    secured: Settings, app_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    kid = "nope\n2026-01-01 INFO service.api forged line" + "x" * 5000
    token = mint(ec_key(kid), SERVICE_URL)
    async with app_client(secured) as client:
        response = await client.post(SERVICE_PATH, json=REQUEST, headers=bearer(token))
    assert response.status_code == 401
    messages = [r.getMessage() for r in caplog.records]
    assert any("unknown kid" in m for m in messages)  # the refusal was logged...
    assert not any("\n2026-01-01" in m for m in messages)  # ...without the raw newline
    assert all(len(m) < 1000 for m in messages)


SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"


@pytest.mark.parametrize("allowlisted", [False, True])
async def test_pinned_keys_are_used_whatever_jku_the_token_names(
    secured: Settings, app_client: Any, keys: Keys, allowlisted: bool
) -> None:
    """The CDS Hooks sandbox always sends a jku. With its key set pinned in `jwks_file` (no
    outbound network, or pinned on purpose), its tokens verify: the pinned keys are tried by
    kid whether or not the jku is allowlisted, and a jku that cannot be reached changes nothing
    (issue 10 item 7)."""
    if allowlisted:
        client = secured.auth.clients[0].model_copy(update={"allowed_jku": [SANDBOX_JKU]})
        auth = secured.auth.model_copy(update={"clients": [client]})
        secured = secured.model_copy(update={"auth": auth})
    token = mint(keys.ec, SERVICE_URL, headers={"jku": SANDBOX_JKU})
    async with app_client(secured) as client:
        response = await client.post(SERVICE_PATH, json=REQUEST, headers=bearer(token))
    assert response.status_code == 200, response.text
