"""Who may read the dashboard: the admin credential (HTTP Basic against the scrypt hash in the
config) or a trusted proxy's header, from the proxy's address only. Never a CDS client's JWT,
never on the EHR-facing app, and never without a credential configured."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from service.cli import app as cli
from service.config import ConfigError, Settings, load_settings
from service.dashboard.app import create_admin_app
from service.dashboard.auth import FAILURE_WINDOW_SECONDS, MAX_FAILURES, PasswordHash, hash_password
from service.storage.store import Storage
from tests.conftest import AppClient
from tests.dashboard.conftest import (
    ADMIN_BASE,
    PASSWORD,
    PASSWORD_HASH,
    USERNAME,
    admin_client,
    admin_section,
    basic,
    seed,
)
from tests.security.support import bearer, mint, one_trusted_client

PAGE = "/dashboard?since=2026-11-01&until=2026-11-30"
ROUTES = (
    "/",
    PAGE,
    "/dashboard/data.json",
    "/dashboard/csv/topics.csv",
    "/dashboard/static/dashboard.js",
    "/dashboard/static/dashboard.css",
    "/dashboard/static/plotly-0.0.0.min.js",
)
PROXY = "X-Forwarded-User"


def refused(response: httpx.Response) -> bool:
    challenge = response.headers.get("www-authenticate", "")
    return response.status_code == 401 and challenge.startswith("Basic ")


async def test_every_route_needs_the_credential(
    admin_settings: Callable[..., Settings], storage: Storage
) -> None:
    seed(storage)
    async with admin_client(admin_settings()) as client:
        for route in ROUTES:
            anonymous = await client.get(route)
            assert refused(anonymous), route
            assert "fires" not in anonymous.text
        wrong_password = await client.get(PAGE, auth=basic(password=PASSWORD + "x"))
        wrong_user = await client.get(PAGE, auth=basic(user="admin"))
        empty = await client.get(PAGE, auth=basic(password=""))
        garbage = await client.get(PAGE, headers={"Authorization": "Basic %%%not-base64"})
        right = await client.get(PAGE, auth=basic())
        again = await client.get("/dashboard/data.json", auth=basic())  # remembered: no KDF
    assert all(refused(r) for r in (wrong_password, wrong_user, empty, garbage))
    assert right.status_code == 200, right.text
    assert right.headers["content-type"].startswith("text/html")
    assert "Signed in as rule-owner" in right.text
    assert again.status_code == 200
    # Security headers on the page and on refusals alike.
    for response in (right, wrong_password):
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
    assert right.headers["cache-control"] == "no-store"


async def test_a_cds_clients_jwt_opens_the_cds_api_but_never_the_dashboard(
    make_settings: Callable[..., Settings], database_url: str, storage: Storage, tmp_path: Path
) -> None:
    """The same token, valid for a trusted EHR, on both apps: the EHR-facing app answers the
    analytics and has no dashboard; the admin app refuses it."""
    seed(storage)
    auth, key = one_trusted_client(tmp_path)
    settings: Settings = make_settings(
        storage={"url": database_url}, auth=auth, admin=admin_section()
    )
    async with AppClient(settings) as cds:
        analytics = await cds.get(
            "/analytics/overrides", headers=bearer(mint(key, "http://cds.test/analytics/overrides"))
        )
        no_dashboard = await cds.get(
            "/dashboard/data.json", headers=bearer(mint(key, "http://cds.test/dashboard/data.json"))
        )
    assert analytics.status_code == 200
    assert no_dashboard.status_code in (401, 404)
    async with admin_client(settings) as admin:
        for audience in ("http://admin.test/dashboard/data.json", "http://cds.test/dashboard"):
            response = await admin.get("/dashboard/data.json", headers=bearer(mint(key, audience)))
            assert refused(response)


async def test_the_proxy_header_counts_only_from_a_trusted_proxy(
    admin_settings: Callable[..., Settings], storage: Storage
) -> None:
    settings = admin_settings(
        password_hash=None, trusted_proxy_header=PROXY, trusted_proxies=["10.20.0.0/16"]
    )
    named = {PROXY: "dr.owner@example.org"}
    async with admin_client(settings, client=("10.20.3.4", 41000)) as via_proxy:
        trusted = await via_proxy.get(PAGE, headers=named)
        no_header = await via_proxy.get(PAGE)
        empty_header = await via_proxy.get(PAGE, headers={PROXY: " "})
        basic_only = await via_proxy.get(PAGE, auth=basic())  # no password configured
    async with admin_client(settings, client=("10.21.0.1", 41000)) as direct:
        untrusted = await direct.get(PAGE, headers=named)
    async with admin_client(settings, client=("::ffff:10.20.9.9", 41000)) as mapped:
        ipv4_mapped = await mapped.get(PAGE, headers=named)
    assert trusted.status_code == 200, trusted.text
    assert "Signed in as proxy:dr.owner@example.org" in trusted.text
    assert ipv4_mapped.status_code == 200
    assert all(refused(r) for r in (no_header, empty_header, basic_only, untrusted))


async def test_basic_still_works_beside_a_trusted_proxy(
    admin_settings: Callable[..., Settings], storage: Storage
) -> None:
    settings = admin_settings(trusted_proxy_header=PROXY, trusted_proxies=["10.20.0.1"])
    async with admin_client(settings) as client:  # from 127.0.0.1: not the proxy
        spoofed = await client.get(PAGE, headers={PROXY: USERNAME})
        with_password = await client.get(PAGE, headers={PROXY: "someone"}, auth=basic())
    assert refused(spoofed)
    assert with_password.status_code == 200
    assert f"Signed in as {USERNAME}" in with_password.text


@pytest.mark.parametrize(
    ("admin", "message"),
    [
        ({"enabled": True}, "admin.enabled = true needs a way to authenticate"),
        ({"enabled": True, "trusted_proxy_header": PROXY}, "needs admin.trusted_proxies"),
        ({"enabled": True, "password_hash": PASSWORD}, "never put the password itself here"),
        (
            {
                "enabled": True,
                "password_hash": "$scrypt$ln=8,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43,
            },
            "ln=14..20",
        ),
        (
            {"enabled": True, "trusted_proxy_header": PROXY, "trusted_proxies": ["0.0.0.0/0"]},
            "trusting every address",
        ),
    ],
)
def test_the_config_refuses_a_dashboard_without_authentication(
    admin: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(None, public_base_url="http://cds.test", environment="test", admin=admin)
    assert message in str(error.value)


def test_serve_refuses_to_start_without_an_admin_credential(tmp_path: Path) -> None:
    config = tmp_path / "admin.toml"
    config.write_text(
        'public_base_url = "http://cds.test"\nenvironment = "test"\n'
        f'state_dir = "{tmp_path}"\n[auth]\nenabled = false\n[admin]\nenabled = true\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "admin.password_hash" in result.stderr
    assert "cardiac-ct-cds admin-password" in result.stderr


def test_admin_password_command_prints_a_hash_the_dashboard_accepts() -> None:
    result = CliRunner().invoke(cli, ["admin-password"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    printed = result.stdout.strip()
    assert printed.startswith("$scrypt$ln=15,r=8,p=3$")
    assert PASSWORD not in result.output
    stored = PasswordHash.parse(printed)
    assert stored.verify(PASSWORD)
    assert not stored.verify(PASSWORD.upper())
    settings = load_settings(
        None,
        public_base_url="http://cds.test",
        environment="test",
        admin={"enabled": True, "password_hash": printed},
    )
    assert settings.admin.password_hash == printed

    short = CliRunner().invoke(cli, ["admin-password"], input="short\n")
    assert short.exit_code == 2
    assert "12 characters" in short.stderr


def test_hashes_are_salted() -> None:
    assert hash_password(PASSWORD, log2_n=14, p=1) != PASSWORD_HASH
    assert PasswordHash.parse(PASSWORD_HASH).verify(PASSWORD)


async def test_password_guessing_from_one_address_is_throttled(
    admin_settings: Callable[..., Settings],
) -> None:
    """After MAX_FAILURES wrong credentials from one address in the window: 429 without a
    password check, even for the right password; another address is not affected."""
    app = create_admin_app(admin_settings())

    def client(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url=ADMIN_BASE)

    async with app.router.lifespan_context(app), client("198.51.100.7") as guesser:
        statuses = [
            (await guesser.get(PAGE, auth=basic(password=f"guess-{i}"))).status_code
            for i in range(MAX_FAILURES)
        ]
        blocked = await guesser.get(PAGE, auth=basic())
        async with client("198.51.100.8") as other:
            elsewhere = await other.get(PAGE, auth=basic())
    assert statuses == [401] * MAX_FAILURES
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"] == str(int(FAILURE_WINDOW_SECONDS))
    assert elsewhere.status_code == 200
