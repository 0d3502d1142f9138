"""Audit trail (hook calls, issued cards) and card feedback.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hook_call",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("received_at", _TIME, nullable=False, index=True),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("hook", sa.String(100)),
        sa.Column("hook_instance", sa.String(200), index=True),
        sa.Column("client_iss", sa.String(500)),
        sa.Column("patient_id", sa.String(200)),
        sa.Column("order_ids", sa.JSON(), nullable=False),
        sa.Column("data_sources", sa.JSON(), nullable=False),
        sa.Column("coverage_assertion_ids", sa.JSON(), nullable=False),
        sa.Column("payer_profile", sa.String(200)),
    )
    op.create_table(
        "issued_card",
        sa.Column(
            "call_id",
            sa.String(36),
            sa.ForeignKey("hook_call.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("card_uuid", sa.String(200), primary_key=True),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("indicator", sa.String(20), nullable=False),
        sa.Column("order_refs", sa.JSON(), nullable=False),
        sa.Column("payer_profile", sa.String(200)),
    )
    op.create_index("ix_issued_card_card_uuid", "issued_card", ["card_uuid"])
    op.create_table(
        "card_feedback",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("card_uuid", sa.String(200), nullable=False, index=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("outcome_at", _TIME, nullable=False, index=True),
        sa.Column("outcome_timestamp", sa.String(100), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON(), nullable=False),
        sa.Column("override_system", sa.String(500)),
        sa.Column("override_code", sa.String(200)),
        sa.Column("override_display", sa.String(500)),
        sa.Column("override_comment", sa.Text()),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("client_iss", sa.String(500)),
        sa.Column("received_at", _TIME, nullable=False, index=True),
        sa.Column("card_known", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("card_uuid", "outcome", "outcome_at", name="uq_card_feedback_item"),
    )


def downgrade() -> None:
    op.drop_table("card_feedback")
    op.drop_table("issued_card")
    op.drop_table("hook_call")
