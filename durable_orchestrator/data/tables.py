"""Postgres tables (SQLAlchemy Core). Migrations in core/migrations mirror this file."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import UserDefinedType

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

# --- agents and tools (issue 5) ---------------------------------------------------------------

tool_calls = sa.Table(
    "tool_calls",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("task_id", sa.Text, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("step_index", sa.Integer, nullable=False),
    sa.Column("turn", sa.Integer, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),  # position within the LLM's reply
    sa.Column("call_id", sa.Text, nullable=False),  # the provider's tool_call id
    sa.Column("tool", sa.Text, nullable=False),
    sa.Column("arguments", sa.Text, nullable=False),  # raw JSON as the model produced it
    # validated | rejected | awaiting_approval | succeeded | failed
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("result", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("latency_ms", sa.Integer),
    sa.Column("requires_approval", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("approval_id", sa.Text, unique=True),
    sa.Column("decision", sa.Text),  # approve | reject | timeout
    sa.Column("decision_comment", sa.Text),
    sa.Column("decided_by", sa.Text),
    _ts("decided_at"),
    _ts("created_at", nullable=False, default=True),
    _ts("finished_at"),
    sa.UniqueConstraint("task_id", "step_index", "turn", "seq", name="uq_tool_calls_turn_seq"),
    sa.Index("ix_tool_calls_task_status", "task_id", "status"),
)

# The tool-calling conversation of a step, one row per stored message (system, user,
# assistant-with-tool-calls); tool results are read from tool_calls. Only steps that call
# tools store anything here.
step_messages = sa.Table(
    "step_messages",
    metadata,
    sa.Column("task_id", sa.Text, sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("step_index", sa.Integer, primary_key=True),
    sa.Column("turn", sa.Integer, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("message", JSONB, nullable=False),
    _ts("created_at", nullable=False, default=True),
)

short_term_memory = sa.Table(
    "short_term_memory",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("task_id", sa.Text, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("step_index", sa.Integer),
    sa.Column("kind", sa.Text, nullable=False),  # output | tool_result | note
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("dedupe_key", sa.Text, nullable=False, unique=True),
    _ts("created_at", nullable=False, default=True),
    _ts("expires_at", nullable=False),
    sa.Index("ix_short_term_memory_task", "task_id", "id"),
    sa.Index("ix_short_term_memory_expires", "expires_at"),
)

# Usage reports and daily budgets scan the ledger by time.
sa.Index("ix_llm_calls_created_at", llm_calls.c.created_at)

# --- issue 7: API security and streaming (migration 0003) ---------------------------------------


class XID8(UserDefinedType):  # type: ignore[type-arg]
    cache_ok = True

    def get_col_spec(self, **_: object) -> str:
        return "xid8"


# Which transaction wrote the event: the SSE poller reads only events whose writer is older
# than every transaction still running, so ids that commit out of order are never skipped.
events.append_column(
    sa.Column("writer_xid", XID8(), nullable=False, server_default=sa.text("pg_current_xact_id()"))
)

revoked_tokens = sa.Table(
    "revoked_tokens",
    metadata,
    sa.Column("jti", sa.Text, primary_key=True),
    sa.Column("revoked_by", sa.Text),
    sa.Column("reason", sa.Text),
    _ts("revoked_at", nullable=False, default=True),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    _ts("at", nullable=False, default=True),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("request_id", sa.Text),
    sa.Column("details", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Index("ix_audit_log_at", "at"),
    sa.Index("ix_audit_log_actor_at", "actor", "at"),
)

# --- issue 4: resilience state shared by all workers ------------------------------------------

circuit_breakers = sa.Table(
    "circuit_breakers",
    metadata,
    # "<provider>:<model>"; one row per breaker, transitions under SELECT ... FOR UPDATE.
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False, server_default="closed"),  # closed|open|half_open
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),  # consecutive
    _ts("open_until"),
    _ts("probe_started_at"),
    sa.Column("last_error", sa.Text),
    _ts("updated_at", nullable=False, default=True),
)

llm_rate_buckets = sa.Table(
    "llm_rate_buckets",
    metadata,
    # "<rpm|tpm>:<model>"; a token bucket refilled continuously, may go negative (token debt).
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    _ts("updated_at", nullable=False, default=True),
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
