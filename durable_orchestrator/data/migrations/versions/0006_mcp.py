"""tool_catalog: tools the workers registered from MCP servers

Revision ID: mcp
Revises: breaker_generation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "mcp"
down_revision = "breaker_generation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_catalog",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "parameters",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("agents", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("requires_approval", sa.Boolean(), nullable=False),
        sa.Column("timeout_secs", sa.Float(), nullable=False),
        sa.Column(
            "capabilities",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index(op.f("ix_tool_catalog_origin"), "tool_catalog", ["origin"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tool_catalog_origin"), table_name="tool_catalog")
    op.drop_table("tool_catalog")
