"""The storage fixtures (SQLite and PostgreSQL) for governance tests."""

from tests.storage.conftest import database_url, settings  # noqa: F401 - pytest fixtures
