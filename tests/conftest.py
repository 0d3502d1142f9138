"""Shared fixtures: settings, the app under test, a real FHIR server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.config import Settings, load_settings
from tests.support.fhir_server import FhirServer, running_fhir_server

SERVICE_BASE = "http://cds.test"


def settings_in(directory: Path, **overrides: Any) -> Settings:
    """Settings for tests, state and SQLite under `directory`: the embedded defaults, auth off,
    plus keyword overrides (top-level sections replaced whole, nested as dicts)."""
    base: dict[str, Any] = {
        "public_base_url": SERVICE_BASE,
        "environment": "test",
        "state_dir": str(directory / "var"),
        "storage": {"url": f"sqlite:///{directory}/test.db"},
        "auth": {"enabled": False},
    }
    base.update(overrides)
    return load_settings(None, **base)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for tests: the embedded defaults plus keyword overrides (nested as dicts)."""

    def make(**overrides: Any) -> Settings:
        return settings_in(tmp_path, **overrides)

    return make


@pytest.fixture
async def fhir_server() -> AsyncIterator[FhirServer]:
    async with running_fhir_server() as server:
        yield server


@pytest.fixture
def app_client() -> Callable[..., Any]:
    """`async with app_client(settings, fhir_transport=...) as client:` HTTP on the app."""

    def make(settings: Settings, **kwargs: Any) -> Any:
        return AppClient(settings, **kwargs)

    return make


class AppClient:
    """The app with its lifespan running, and an httpx client on it (an async context manager)."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.app = create_app(settings, **kwargs)
        self._lifespan: Any = None
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> httpx.AsyncClient:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=SERVICE_BASE
        )
        return self._client

    async def __aexit__(self, *exc: Any) -> None:
        assert self._client is not None
        await self._client.aclose()
        await self._lifespan.__aexit__(*exc)
