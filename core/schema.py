"""Postgres tables (SQLAlchemy Core). Migrations in core/migrations mirror this file."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = sa.MetaData()

_now = sa.text("now()")


def _ts(name: str, *, nullable: bool = True, default: bool = False) -> sa.Column:
    return sa.Column(
        name, sa.DateTime(timezone=True), nullable=nullable, server_default=_now if default else None
    )


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    _ts("created_at", nullable=False, default=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("key_hash", sa.Text, nullable=False, unique=True),
    sa.Column("name", sa.Text),
    sa.Column("scopes", ARRAY(sa.Text), nullable=False),
    _ts("created_at", nullable=False, default=True),
    _ts("expires_at"),
    _ts("revoked_at"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("workflow_id", sa.Text, nullable=False, unique=True),
    sa.Column("result", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("plan_fallback", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("plan_errors", JSONB),
    sa.Column("idempotency_key", sa.Text),
    sa.Column("request_hash", sa.Text),
    sa.Column("options", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    _ts("created_at", nullable=False, default=True),
    _ts("updated_at", nullable=False, default=True),
    sa.UniqueConstraint("user_id", "idempotency_key", name="uq_tasks_user_idempotency"),
    sa.Index("ix_tasks_user_created", "user_id", sa.text("created_at DESC"), sa.text("id DESC")),
)

steps = sa.Table(
    "steps",
    metadata,
    sa.Column("task_id", sa.Text, sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("index", sa.Integer, primary_key=True),
    sa.Column("agent", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("instructions", sa.Text, nullable=False),
    sa.Column("depends_on", ARRAY(sa.Integer), nullable=False, server_default=sa.text("'{}'")),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("output", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("model", sa.Text),
    _ts("started_at"),
    _ts("finished_at"),
)

llm_calls = sa.Table(
    "llm_calls",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("task_id", sa.Text, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("step_index", sa.Integer),
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Numeric(18, 8), nullable=False, server_default="0"),
    sa.Column("priced", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("latency_ms", sa.Integer, nullable=False),
    # Activities run at least once: one row per (workflow, activity, attempt) no matter what.
    sa.Column("call_key", sa.Text, nullable=False, unique=True),
    _ts("created_at", nullable=False, default=True),
    sa.Index("ix_llm_calls_task", "task_id"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("task_id", sa.Text, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("data", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    # Same event written by a retried activity collapses onto the first one.
    sa.Column("dedupe_key", sa.Text, nullable=False, unique=True),
    _ts("created_at", nullable=False, default=True),
    sa.Index("ix_events_task_id", "task_id", "id"),
)

# --- long-term memory (issue 6): the truth behind the per-process FAISS cache ----------------

memories = sa.Table(
    "memories",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("task_id", sa.Text),
    sa.Column("step_index", sa.Integer),
    # float32 little-endian, L2-normalised, `embedding_dim` values.
    sa.Column("embedding", sa.LargeBinary, nullable=False),
    # Idempotency for activity writes (workflow id + what was remembered); NULL for API writes.
    sa.Column("source_key", sa.Text),
    _ts("created_at", nullable=False, default=True),
    _ts("deleted_at"),
    sa.UniqueConstraint("source_key", name="uq_memories_source_key"),
    sa.Index("ix_memories_user_live", "user_id", "id", postgresql_where=sa.text("deleted_at IS NULL")),
    sa.Index("ix_memories_deleted_at", "deleted_at", postgresql_where=sa.text("deleted_at IS NOT NULL")),
    sa.Index("ix_memories_metadata", "metadata", postgresql_using="gin",
             postgresql_ops={"metadata": "jsonb_path_ops"}),
)
