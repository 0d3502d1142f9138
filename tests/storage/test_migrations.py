"""The Alembic migrations build, from an empty database, exactly the schema the ORM expects."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.storage.models import Base
from service.storage.store import Storage


def test_migrations_apply_from_empty_and_match_the_models(database_url: str) -> None:
    store = Storage(database_url)
    try:
        assert inspect(store.engine).get_table_names() == []
        store.ensure_schema()
        assert set(inspect(store.engine).get_table_names()) == {
            "alembic_version",
            "hook_call",
            "issued_card",
            "card_feedback",
        }
        with store.engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert context.get_current_revision() == "0002"
            assert compare_metadata(context, Base.metadata) == []
    finally:
        store.dispose()


def test_migrating_twice_is_harmless(database_url: str) -> None:
    first, second = Storage(database_url), Storage(database_url)  # e.g. a restart
    try:
        first.ensure_schema()
        second.ensure_schema()
        with second.engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == "0002"
    finally:
        first.dispose()
        second.dispose()


def test_sqlite_connections_are_durable(tmp_path: Path) -> None:
    """WAL with synchronous=FULL: a commit (and so a feedback 200) survives a crash."""
    store = Storage(f"sqlite:///{tmp_path}/nested/dir/cds.db")  # the directory is created
    try:
        store.ensure_schema()
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.dispose()
