"""Issued cards carry their topic's mode: active (returned) or silent (audit trail only).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issued_card") as batch:
        batch.add_column(sa.Column("mode", sa.String(10), nullable=False, server_default="active"))


def downgrade() -> None:
    with op.batch_alter_table("issued_card") as batch:
        batch.drop_column("mode")
