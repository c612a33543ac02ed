"""long-term memory: the memories table (truth for the FAISS cache)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("task_id", sa.Text(), nullable=True),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("source_key", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source_key", name="uq_memories_source_key"),
    )
    op.create_index("ix_memories_user_live", "memories", ["user_id", "id"],
                    postgresql_where=sa.text("deleted_at IS NULL"))
    op.create_index("ix_memories_deleted_at", "memories", ["deleted_at"],
                    postgresql_where=sa.text("deleted_at IS NOT NULL"))
    op.create_index("ix_memories_metadata", "memories", ["metadata"],
                    postgresql_using="gin", postgresql_ops={"metadata": "jsonb_path_ops"})


def downgrade() -> None:
    op.drop_table("memories")
