"""Every PostgreSQL table, as SQLModel models. The migrations are generated from these
(`alembic revision --autogenerate`), and a test fails when the two disagree.

Queries live beside them, one module per aggregate (tasks.py, conversation.py, ledger.py, ...),
written as SQLAlchemy statements over these models; nothing outside this package writes SQL.

Two attribute names differ from their column: SQLAlchemy reserves `metadata` on a model, so the
`metadata` JSONB columns are the `meta` attribute.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import UserDefinedType
from sqlmodel import Field, SQLModel

metadata = SQLModel.metadata

_EMPTY_JSON = sa.text("'{}'::jsonb")


def _text(**kw: Any) -> Any:
    return Field(sa_type=sa.Text, **kw)


def _json(name: str | None = None, *, nullable: bool = False) -> Any:
    """A JSONB column (empty object by default); `name` when the attribute is not the column."""
    if name:
        return Field(
            default_factory=dict,
            sa_column=sa.Column(name, JSONB, nullable=nullable, server_default=_EMPTY_JSON),
        )
    return Field(default_factory=dict, sa_type=JSONB, nullable=nullable,
                 sa_column_kwargs={"server_default": _EMPTY_JSON})


def _when(*, default_now: bool = False, nullable: bool = True, required: bool = False) -> Any:
    """A timestamptz column, set by the database clock (`now()`) when `default_now`;
    `required`: no Python default (see the API-shared bases below)."""
    return Field(
        default=... if required else None,
        sa_type=sa.DateTime(timezone=True),
        nullable=nullable,
        sa_column_kwargs={"server_default": sa.func.now()} if default_now else {},
    )


def _created() -> Any:
    return _when(default_now=True, nullable=False)


def _task_fk(*, primary_key: bool = False) -> Any:
    return Field(sa_type=sa.Text, foreign_key="tasks.id", ondelete="CASCADE", primary_key=primary_key)


def _identity() -> Any:
    return Field(default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(), primary_key=True))


def _labels() -> Any:
    """Provenance labels ("private", "untrusted") of what a row's content was made from."""
    # The server default only: some INSERTs (with a CTE) get NULL for Python-side defaults.
    return Field(
        default_factory=list,
        sa_column=sa.Column(ARRAY(sa.Text), nullable=False, server_default="{}"),
    )


class XID8(UserDefinedType):  # type: ignore[type-arg]
    """PostgreSQL's 64-bit transaction id (pg_current_xact_id())."""

    cache_ok = True

    def get_col_spec(self, **_: object) -> str:
        return "xid8"


# --- users and their credentials --------------------------------------------------------------


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: str = _text(primary_key=True)
    created_at: datetime | None = _created()


class ApiKey(SQLModel, table=True):
    """Shown once, stored as a SHA-256 hash, known by its short public prefix."""

    __tablename__ = "api_keys"

    id: str = _text(primary_key=True)
    user_id: str = Field(sa_type=sa.Text, foreign_key="users.id", index=True)
    prefix: str = _text()
    key_hash: str = _text(unique=True)
    name: str | None = _text(default=None, nullable=True)
    scopes: list[str] = Field(sa_type=ARRAY(sa.Text))
    created_at: datetime | None = _created()
    expires_at: datetime | None = _when()
    revoked_at: datetime | None = _when()
    # Overrides ORCH_USER_MAX_RUNNING_TASKS for tasks submitted with this key.
    max_running_tasks: int | None = Field(default=None, nullable=True)


class RevokedToken(SQLModel, table=True):
    """Bearer JWTs refused by `jti` (the tokens themselves are never stored)."""

    __tablename__ = "revoked_tokens"

    jti: str = _text(primary_key=True)
    revoked_by: str | None = _text(default=None, nullable=True)
    reason: str | None = _text(default=None, nullable=True)
    revoked_at: datetime | None = _created()


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_at", "at"),
        sa.Index("ix_audit_log_actor_at", "actor", "at"),
    )

    id: int | None = _identity()
    at: datetime | None = _created()
    actor: str = _text()
    action: str = _text()
    outcome: str = _text()
    request_id: str | None = _text(default=None, nullable=True)
    details: dict[str, Any] = _json()


# --- tasks, their steps, events and the LLM ledger --------------------------------------------

TaskStatus = Literal["pending", "queued", "running", "waiting_approval", "completed", "failed", "cancelled"]
TERMINAL: frozenset[TaskStatus] = frozenset({"completed", "failed", "cancelled"})
# The same predicate in the reconciler's partial index and in its query, so the planner uses it.
UNFINISHED = "status NOT IN ('completed', 'failed', 'cancelled')"
# planner: the LLM planned it; fallback: the planner's plan was unusable, one step instead;
# client: given with the submission (`plan` or `agent`); rerun: copied from the parent task.
PlanSource = Literal["planner", "client", "fallback", "rerun"]

# The bases below are shared with the API's views of tasks and steps (api/schemas.py), which
# always send every field: so their fields carry no Python default, only the server defaults
# (every INSERT here names its columns or lets the database fill them in).


class TaskBase(SQLModel):
    """A task as GET /tasks lists it (the row, less its timestamps)."""

    id: str = _text(primary_key=True)
    status: TaskStatus = _text()
    description: str = _text()
    meta: dict[str, Any] = Field(
        alias="metadata",
        sa_column=sa.Column("metadata", JSONB, nullable=False, server_default=_EMPTY_JSON),
    )
    workflow_id: str = _text(unique=True)


class TaskOutcomeBase(TaskBase):
    """A task as GET /tasks/{id} shows it, less its steps, cost and timestamps."""

    user_id: str = Field(sa_type=sa.Text, foreign_key="users.id")
    result: str | None = _text(nullable=True)
    error: str | None = _text(nullable=True)
    plan_fallback: bool = Field(sa_column_kwargs={"server_default": sa.false()})
    # none_as_null: no plan errors is SQL NULL, not the JSON value null
    plan_errors: list[str] | None = Field(sa_type=JSONB(none_as_null=True), nullable=True)
    # Where the steps came from; NULL until the task has a plan.
    plan_source: PlanSource | None = _text(nullable=True)
    # A rerun's lineage: the task it was rerun from, and from which step (NULL: replanned).
    parent_task_id: str | None = Field(
        sa_type=sa.Text, foreign_key="tasks.id", ondelete="SET NULL", nullable=True
    )
    rerun_of_step: int | None = Field(nullable=True)


class Task(TaskOutcomeBase, table=True):
    __tablename__ = "tasks"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_tasks_user_idempotency"),
        sa.Index("ix_tasks_user_created", "user_id", sa.text("created_at DESC"), sa.text("id DESC")),
        # What the reconciler scans: the unfinished tasks of a queue, quietest first.
        sa.Index(
            "ix_tasks_unfinished", "task_queue", "updated_at",
            postgresql_where=sa.text(UNFINISHED),
        ),
        sa.Index("ix_tasks_parent", "parent_task_id", postgresql_where=sa.text("parent_task_id IS NOT NULL")),
    )

    idempotency_key: str | None = _text(default=None, nullable=True)
    request_hash: str | None = _text(default=None, nullable=True)
    # What the planner was given beyond the request (the user's memories: "private", and
    # "untrusted" when one was made from fetched content); every step's prompt carries it.
    plan_labels: list[str] = _labels()
    # budget and webhook_url, as accepted at submission
    options: dict[str, Any] = _json()
    created_at: datetime | None = _created()
    updated_at: datetime | None = _created()
    # The task queue its workflow runs on (NULL: submitted before the column existed); the
    # reconciler of a queue looks after its own tasks only.
    task_queue: str | None = _text(default=None, nullable=True)
    # The number of the task's last event: each event takes the next one under this row's
    # lock, so a task's events are numbered in commit order.
    last_event_seq: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"})
    # Per-user concurrency (data/admission.py): the bound this task was submitted under (NULL:
    # none), and when it took one of its user's running slots.
    max_running: int | None = Field(default=None, nullable=True)
    admitted_at: datetime | None = _when()
    # Until when an event-stream client wants the live text of this task's steps; steps nobody
    # watches get whole answers instead of streamed ones (data/watching.py).
    watched_until: datetime | None = _when()


class StepBase(SQLModel):
    """A step as GET /tasks/{id} shows it, less its cost and tool calls."""

    index: int
    agent: str = _text()
    title: str = _text()
    instructions: str = _text()
    depends_on: list[int] = Field(sa_type=ARRAY(sa.Integer), sa_column_kwargs={"server_default": "{}"})
    status: str = _text()  # pending | running | waiting_approval | completed | failed | skipped | cancelled
    output: str | None = _text(nullable=True)
    error: str | None = _text(nullable=True)
    model: str | None = _text(nullable=True)
    started_at: datetime | None = _when(required=True)
    finished_at: datetime | None = _when(required=True)
    # Set on a rerun's step whose output was reused: the task whose step (same index) produced
    # it, with the conversation and ledger rows of that work.
    reused_from_task_id: str | None = _text(nullable=True)


class Step(StepBase, table=True):
    __tablename__ = "steps"
    # spelled out: the inherited columns come before task_id, which leads the key
    __table_args__ = (sa.PrimaryKeyConstraint("task_id", "index"),)

    task_id: str = _task_fk()


LedgerStatus = Literal["reserved", "settled", "released"]


class LLMCall(SQLModel, table=True):
    """The ledger: one row per LLM call, written *before* the call as a reservation of its
    worst case (`reserved`), then `settled` with the answer's usage, or `released` when the
    call failed. A row left `reserved` (its worker died) counts at its worst case."""

    __tablename__ = "llm_calls"
    __table_args__ = (
        sa.Index("ix_llm_calls_task", "task_id"),
        # usage reports scan the ledger by time; daily budgets by user and time
        sa.Index("ix_llm_calls_created_at", "created_at"),
        sa.Index("ix_llm_calls_user_created", "user_id", "created_at"),
    )

    id: int | None = _identity()
    task_id: str = _task_fk()
    user_id: str | None = _text(default=None, nullable=True)
    step_index: int | None = None
    purpose: str = _text()  # plan | step
    model: str = _text()  # the model that answered (the requested one until settled)
    requested_model: str | None = _text(default=None, nullable=True)
    status: LedgerStatus = _text(default="settled", sa_column_kwargs={"server_default": "settled"})
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal = Field(
        default=Decimal(0), sa_type=sa.Numeric(18, 8), sa_column_kwargs={"server_default": "0"}
    )
    priced: bool = Field(default=True, sa_column_kwargs={"server_default": sa.true()})
    reserved_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    reserved_cost_usd: Decimal = Field(
        default=Decimal(0), sa_type=sa.Numeric(18, 8), sa_column_kwargs={"server_default": "0"}
    )
    latency_ms: int
    # Activities run at least once: one row per (workflow run, activity, attempt, call).
    call_key: str = _text(unique=True)
    created_at: datetime | None = _created()


class Event(SQLModel, table=True):
    """What the SSE stream sends, in `seq` order."""

    __tablename__ = "events"
    __table_args__ = (sa.UniqueConstraint("task_id", "seq", name="uq_events_task_seq"),)

    id: int | None = _identity()
    task_id: str = _task_fk()
    type: str = _text()
    data: dict[str, Any] = _json()
    # The same event written by a retried activity collapses onto the first one.
    dedupe_key: str = _text(unique=True)
    created_at: datetime | None = _created()
    # Its number within the task (the SSE id), in commit order: see data/events.py.
    seq: int = Field(sa_type=sa.BigInteger)


# --- tool calls and the conversation of a step --------------------------------------------------


class ToolCall(SQLModel, table=True):
    __tablename__ = "tool_calls"
    __table_args__ = (
        sa.UniqueConstraint("task_id", "step_index", "turn", "seq", name="uq_tool_calls_turn_seq"),
        sa.Index("ix_tool_calls_task_status", "task_id", "status"),
    )

    id: int | None = _identity()
    task_id: str = _task_fk()
    step_index: int
    turn: int
    seq: int  # position within the LLM's reply
    call_id: str = _text()  # the provider's tool_call id
    tool: str = _text()
    arguments: str = _text()  # raw JSON as the model produced it
    status: str = _text()  # validated | rejected | awaiting_approval | succeeded | failed
    result: str | None = _text(default=None, nullable=True)
    error: str | None = _text(default=None, nullable=True)
    latency_ms: int | None = None
    requires_approval: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    approval_id: str | None = _text(default=None, nullable=True, unique=True)
    decision: str | None = _text(default=None, nullable=True)  # approve | reject | timeout
    decision_comment: str | None = _text(default=None, nullable=True)
    decided_by: str | None = _text(default=None, nullable=True)
    decided_at: datetime | None = _when()
    created_at: datetime | None = _created()
    finished_at: datetime | None = _when()
    # The step's conversation when the model asked for this call, and what its result added.
    context_labels: list[str] = _labels()
    result_labels: list[str] = _labels()


class StepMessage(SQLModel, table=True):
    """The tool-calling conversation of a step, one row per stored message (system, user,
    assistant-with-tool-calls); tool results are read from tool_calls. Steps answered in one
    call store nothing here."""

    __tablename__ = "step_messages"

    task_id: str = _task_fk(primary_key=True)
    step_index: int = Field(primary_key=True)
    turn: int = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    message: dict[str, Any] = Field(sa_type=JSONB)
    created_at: datetime | None = _created()


class ShortTermEntry(SQLModel, table=True):
    """A task's short-term memory: step outputs, tool results and notes later steps read."""

    __tablename__ = "short_term_memory"
    __table_args__ = (
        sa.Index("ix_short_term_memory_task", "task_id", "id"),
        sa.Index("ix_short_term_memory_expires", "expires_at"),
    )

    id: int | None = _identity()
    task_id: str = _task_fk()
    step_index: int | None = None
    kind: str = _text()  # output | tool_result | note
    content: str = _text()
    labels: list[str] = _labels()
    dedupe_key: str = _text(unique=True)
    created_at: datetime | None = _created()
    expires_at: datetime | None = _when(nullable=False)


# --- state of the LLM gateway, shared by every worker -------------------------------------------


class CircuitBreakerState(SQLModel, table=True):
    """One row per "<provider>:<model>" breaker; transitions under SELECT ... FOR UPDATE."""

    __tablename__ = "circuit_breakers"

    key: str = _text(primary_key=True)
    state: str = _text(default="closed", sa_column_kwargs={"server_default": "closed"})
    failures: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # consecutive
    # Bumped on every state change: a verdict counts only for the generation its permit saw.
    generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    open_until: datetime | None = _when()
    probe_started_at: datetime | None = _when()
    last_error: str | None = _text(default=None, nullable=True)
    updated_at: datetime | None = _created()


class RateBucket(SQLModel, table=True):
    """A token bucket per "<rpm|tpm>:<model>", refilled continuously; may go negative (debt)."""

    __tablename__ = "llm_rate_buckets"

    key: str = _text(primary_key=True)
    tokens: float = Field(sa_type=sa.Float)
    updated_at: datetime | None = _created()


# --- long-term memory: the truth behind each process's FAISS cache ------------------------------


class Memory(SQLModel, table=True):
    __tablename__ = "memories"
    __table_args__ = (
        sa.UniqueConstraint("source_key", name="uq_memories_source_key"),
        sa.Index("ix_memories_user_live", "user_id", "id", postgresql_where=sa.text("deleted_at IS NULL")),
        sa.Index("ix_memories_deleted_at", "deleted_at", postgresql_where=sa.text("deleted_at IS NOT NULL")),
        sa.Index("ix_memories_metadata", "metadata", postgresql_using="gin",
                 postgresql_ops={"metadata": "jsonb_path_ops"}),
    )

    id: int | None = _identity()
    user_id: str = _text()
    text: str = _text()
    meta: dict[str, Any] = _json("metadata")
    task_id: str | None = _text(default=None, nullable=True)
    step_index: int | None = None
    # float32 little-endian, L2-normalised
    embedding: bytes = Field(sa_type=sa.LargeBinary)
    # Idempotency of activity writes (workflow id + what was remembered); NULL for API writes.
    source_key: str | None = _text(default=None, nullable=True)
    created_at: datetime | None = _created()
    deleted_at: datetime | None = _when()


class MemoryOutboxEntry(SQLModel, table=True):
    """A memory written but not embedded yet: the task's finish transaction adds it, a worker's
    memory writer embeds it, moves it into `memories` (a new id there, so the caches' id
    watermark sees it) and deletes it, in one transaction."""

    __tablename__ = "memory_outbox"
    __table_args__ = (sa.UniqueConstraint("source_key", name="uq_memory_outbox_source_key"),)

    id: int | None = _identity()
    user_id: str = _text()
    text: str = _text()
    meta: dict[str, Any] = _json("metadata")
    task_id: str | None = _text(default=None, nullable=True)
    source_key: str = _text()
    created_at: datetime | None = _created()


# --- tools the workers registered from MCP servers (GET /tools reads them) --------------------


class CatalogTool(SQLModel, table=True):
    """A tool a worker registered from an MCP server; replaced per origin on every re-list, so
    the API can list them without connecting to the servers itself."""

    __tablename__ = "tool_catalog"

    name: str = _text(primary_key=True)
    origin: str = _text(index=True)  # mcp:<server>
    description: str = _text(default="")
    parameters: dict[str, Any] = _json()
    agents: list[str] = Field(default_factory=list, sa_type=ARRAY(sa.Text), nullable=False)
    requires_approval: bool = Field(default=False)
    timeout_secs: float = Field(sa_type=sa.Float)
    capabilities: dict[str, Any] = _json()
    updated_at: datetime | None = _created()
