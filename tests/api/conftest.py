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

from tests.conftest import AppClient, settings_in


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_client(tmp_path_factory: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with AppClient(settings_in(tmp_path_factory.mktemp("shared-app"))) as client:
        yield client
