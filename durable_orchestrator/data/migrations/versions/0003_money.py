"""ledger rows are reservations: status, requested model, reserved worst case, user

Revision ID: money
Revises: reconcile
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "money"
down_revision = "reconcile"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("llm_calls", sa.Column("user_id", sa.Text(), nullable=True))
    op.add_column("llm_calls", sa.Column("requested_model", sa.Text(), nullable=True))
    op.add_column(
        "llm_calls", sa.Column("status", sa.Text(), server_default="settled", nullable=False)
    )
    op.add_column(
        "llm_calls", sa.Column("reserved_tokens", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column(
        "llm_calls",
        sa.Column(
            "reserved_cost_usd",
            sa.Numeric(precision=18, scale=8),
            server_default="0",
            nullable=False,
        ),
    )
    # Rows written before this revision belong to their task's user.
    op.execute(
        "UPDATE llm_calls SET user_id = tasks.user_id FROM tasks WHERE tasks.id = llm_calls.task_id"
    )
    op.create_index(
        "ix_llm_calls_user_created", "llm_calls", ["user_id", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_llm_calls_user_created", table_name="llm_calls")
    for column in ("reserved_cost_usd", "reserved_tokens", "status", "requested_model", "user_id"):
        op.drop_column("llm_calls", column)
