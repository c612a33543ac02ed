"""agents and tools: tool_calls, step_messages, short_term_memory, ledger time index

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts(name: str, *, nullable: bool = True, default: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.text("now()") if default else None,
    )


def upgrade() -> None:
    op.create_table(
        "tool_calls",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("task_id", sa.Text(), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("tool", sa.Text(), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("result", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("latency_ms", sa.Integer()),
        sa.Column("requires_approval", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("approval_id", sa.Text(), unique=True),
        sa.Column("decision", sa.Text()),
        sa.Column("decision_comment", sa.Text()),
        sa.Column("decided_by", sa.Text()),
        _ts("decided_at"),
        _ts("created_at", nullable=False, default=True),
        _ts("finished_at"),
        sa.UniqueConstraint("task_id", "step_index", "turn", "seq", name="uq_tool_calls_turn_seq"),
    )
    op.create_index("ix_tool_calls_task_status", "tool_calls", ["task_id", "status"])
    op.create_table(
        "step_messages",
        sa.Column("task_id", sa.Text(), sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step_index", sa.Integer(), primary_key=True),
        sa.Column("turn", sa.Integer(), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("message", postgresql.JSONB(), nullable=False),
        _ts("created_at", nullable=False, default=True),
    )
    op.create_table(
        "short_term_memory",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("task_id", sa.Text(), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step_index", sa.Integer()),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("dedupe_key", sa.Text(), nullable=False, unique=True),
        _ts("created_at", nullable=False, default=True),
        _ts("expires_at", nullable=False),
    )
    op.create_index("ix_short_term_memory_task", "short_term_memory", ["task_id", "id"])
    op.create_index("ix_short_term_memory_expires", "short_term_memory", ["expires_at"])
    op.create_index("ix_llm_calls_created_at", "llm_calls", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_llm_calls_created_at", table_name="llm_calls")
    op.drop_table("short_term_memory")
    op.drop_table("step_messages")
    op.drop_table("tool_calls")
