"""Every storage test runs on SQLite (a temporary file) and on PostgreSQL (a schema of its own
in the `test` database, dropped afterwards). If PostgreSQL is down these tests fail."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from service.config import Settings
from service.storage.service import Persistence
from service.storage.store import Storage
from tests.conftest import AppClient

POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def unused_loopback_port() -> int:
    """A loopback port nothing listens on now (bound by the OS, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def postgres_url(schema: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/storage-test.db"
        return
    schema = f"cds_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield postgres_url(schema)
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def storage(database_url: str) -> Iterator[Storage]:
    store = Storage(database_url)
    store.ensure_schema()
    yield store
    store.dispose()


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    result: Settings = make_settings(storage={"url": database_url})
    return result


@pytest.fixture
async def persistence(settings: Settings) -> AsyncIterator[Persistence]:
    store = Persistence(settings.storage)
    await store.start()
    yield store
    await store.stop()


class ServedApp(AppClient):
    """`async with ServedApp(settings) as client:`, with the app's Persistence at hand."""

    @property
    def persistence(self) -> Persistence:
        found: Persistence = self.app.state.persistence
        return found

    async def drain_audit(self) -> None:
        """Wait until the background writer has committed every queued audit record."""
        async with asyncio.timeout(30):
            await self.persistence.writer.drain()
