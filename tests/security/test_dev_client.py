"""The development client: a key pair generated once, trusted only outside production."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from typer.testing import CliRunner

from service.cli import app as cli
from service.config import ConfigError, load_settings
from service.security.dev_client import DEV_ISSUER, DevClientError, ensure_dev_client
from tests.api.test_invoke_smoke import REQUEST
from tests.conftest import SERVICE_BASE
from tests.security.support import EMPTY_401, SERVICE_PATH, bearer
from tests.support.conformance import assert_conformant_response


def _config(tmp_path: Path, **auth: Any) -> Path:
    """A TOML config file like the embedded development profile, state in tmp_path."""
    auth_lines = "\n".join(
        f"{k} = {json.dumps(v)}" for k, v in {"dev_client": True, **auth}.items()
    )
    path = tmp_path / "dev.toml"
    path.write_text(
        f'public_base_url = "{SERVICE_BASE}"\n'
        'environment = "development"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[storage]\nurl = "sqlite:///{tmp_path}/dev.db"\n'
        f"[auth]\n{auth_lines}\n",
        encoding="utf-8",
    )
    return path


def _dev_token(config: Path, aud: str) -> str:
    result = CliRunner().invoke(cli, ["dev-token", "--aud", aud, "--config", str(config)])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


async def test_dev_token_from_cli_is_accepted(tmp_path: Path, app_client: Any) -> None:
    config = _config(tmp_path)
    settings = load_settings(config)
    async with app_client(settings) as client:
        discovery = await client.get(
            "/cds-services", headers=bearer(_dev_token(config, "/cds-services"))
        )
        token = _dev_token(config, f"{SERVICE_BASE}{SERVICE_PATH}")
        invoke = await client.post(SERVICE_PATH, json=REQUEST, headers=bearer(token))
        replay = await client.post(SERVICE_PATH, json=REQUEST, headers=bearer(token))
    assert discovery.status_code == 200, discovery.text
    assert invoke.status_code == 200, invoke.text
    assert_conformant_response(invoke.json())
    assert replay.status_code == 401  # dev tokens get no special treatment

    claims = jwt.decode(token, options={"verify_signature": False})
    header = jwt.get_unverified_header(token)
    assert claims["iss"] == DEV_ISSUER
    assert claims["exp"] - claims["iat"] == 300
    assert header["alg"] == "ES384"
    assert header["typ"] == "JWT"


def test_key_pair_generated_once_with_private_permissions(tmp_path: Path) -> None:
    first = ensure_dev_client(tmp_path)
    second = ensure_dev_client(tmp_path)
    private = tmp_path / "dev-client" / "private-key.pem"
    assert first.kid == second.kid  # not regenerated
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "dev-client").stat().st_mode) == 0o700
    published = json.loads(first.jwks_file.read_text())
    assert [k["kid"] for k in published["keys"]] == [first.kid]
    assert "d" not in published["keys"][0]  # the public set holds no private part


def test_readable_private_key_is_refused(tmp_path: Path) -> None:
    ensure_dev_client(tmp_path)
    (tmp_path / "dev-client" / "private-key.pem").chmod(0o644)
    with pytest.raises(DevClientError, match="chmod 600"):
        ensure_dev_client(tmp_path)


async def test_dev_client_not_trusted_when_disabled(tmp_path: Path, app_client: Any) -> None:
    token = _dev_token(_config(tmp_path), "/cds-services")  # key exists, issued while enabled
    settings = load_settings(_config(tmp_path, dev_client=False))
    async with app_client(settings) as client:
        response = await client.get("/cds-services", headers=bearer(token))
    assert response.status_code == 401
    assert response.json() == EMPTY_401


def test_dev_token_refused_when_dev_client_disabled(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "dev-token",
            "--aud",
            "/cds-services",
            "--config",
            str(_config(tmp_path, dev_client=False)),
        ],
    )
    assert result.exit_code == 2
    assert "dev client" in result.output


def test_production_refuses_dev_client(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dev_client"):
        load_settings(_config(tmp_path), environment="production")


async def test_dev_client_startup_is_logged_loudly(
    tmp_path: Path, app_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING")
    async with app_client(load_settings(_config(tmp_path))):
        pass
    assert any(
        r.levelname == "WARNING" and "DEV CLIENT TRUSTED" in r.getMessage() for r in caplog.records
    )


async def test_dev_client_fhir_allowlist_defaults_to_nothing(tmp_path: Path) -> None:
    from service.app import create_app

    application = create_app(load_settings(_config(tmp_path)))
    authenticator = application.state.runtime.authenticator
    token = _dev_token(_config(tmp_path), "/cds-services")
    caller = await authenticator.authenticate(f"Bearer {token}", f"{SERVICE_BASE}/cds-services")
    await authenticator.aclose()
    assert caller.issuer == DEV_ISSUER
    assert caller.fhir_servers == ()
    assert caller.fhir_allowance("http://127.0.0.1:8080/fhir") is None
