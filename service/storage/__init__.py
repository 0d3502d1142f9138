"""Persistence: hook-call audit trail, card feedback, override analytics.

SQLAlchemy 2 (sync engine, used from worker threads) on SQLite by default or PostgreSQL by URL;
the schema is owned by the Alembic migrations in `migrations/`, applied at startup.
"""
