"""One app per test module for the long parametrized protocol tables.

Building an app costs ~0.1 s (TLS contexts, YAML); the protocol tables send hundreds of requests
that never change the app's state, so a module shares one. Modules using it declare
``pytestmark = pytest.mark.asyncio(loop_scope="module")``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from service.app import create_app
from service.config import load_settings
from tests.conftest import SERVICE_BASE


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_client(tmp_path_factory: Any) -> AsyncIterator[httpx.AsyncClient]:
    tmp = tmp_path_factory.mktemp("shared-app")
    settings = load_settings(
        None,
        public_base_url=SERVICE_BASE,
        environment="test",
        state_dir=str(tmp / "var"),
        storage={"url": f"sqlite:///{tmp}/test.db"},
        auth={"enabled": False},
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SERVICE_BASE) as client,
    ):
        yield client
