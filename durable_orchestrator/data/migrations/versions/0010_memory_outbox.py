"""memory_outbox: completed tasks' results waiting to be embedded into memories

Revision ID: memory_outbox
Revises: watched
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "memory_outbox"
down_revision = "watched"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memory_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "metadata", postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"), nullable=False,
        ),
        sa.Column("task_id", sa.Text(), nullable=True),
        sa.Column("source_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source_key", name="uq_memory_outbox_source_key"),
    )


def downgrade() -> None:
    op.drop_table("memory_outbox")
