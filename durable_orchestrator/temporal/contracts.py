"""Types that cross the Temporal boundary: workflow inputs, activity inputs and results.

Standard library only, so workflow code can import this module inside the sandbox. They carry
ids and short strings; step outputs, prompts and plans live in Postgres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

# --- names on the wire ------------------------------------------------------------------------
# Workflows schedule activities by these names and the activities register under them
# (`@activity.defn(name=PLAN_TASK)`), so a rename cannot leave one side behind. Names, not
# method references: workflow code must not import the activity modules (they pull in openai
# and sqlalchemy, which fail in the workflow sandbox).
TASK_WORKFLOW: Final = "TaskWorkflow"
APPROVAL_UPDATE: Final = "decide_approval"  # sent by POST /tasks/{id}/approvals/{approval_id}
SLOT_GRANTED_SIGNAL: Final = "slot_granted"  # sent by finish_task when a queued task may start

PLAN_TASK: Final = "plan_task"
RUN_STEP: Final = "run_step"
RUN_TOOL: Final = "run_tool"
FINISH_TASK: Final = "finish_task"  # local activity
TAKE_SLOT: Final = "take_slot"  # local activity
SEND_WEBHOOK: Final = "send_webhook"

# Maintenance: the bare names are the workflow types the schedules start; each runs one activity.
EXPIRE_SHORT_TERM_MEMORY: Final = "ExpireShortTermMemory"
ARCHIVE_AUDIT_LOG: Final = "ArchiveAuditLog"
PURGE_API_KEYS: Final = "PurgeApiKeys"
EXPIRE_SHORT_TERM_MEMORY_ACTIVITY: Final = "expire_short_term_memory"
ARCHIVE_AUDIT_LOG_ACTIVITY: Final = "archive_audit_log"
PURGE_API_KEYS_ACTIVITY: Final = "purge_api_keys"


def workflow_id_for(task_id: str) -> str:
    return f"task-{task_id}"


@dataclass
class ExecutionPolicy:
    """Retry and timeout settings, fixed when the task starts so replays see the same values."""

    initial_interval_secs: float = 1.0
    backoff: float = 2.0
    max_interval_secs: float = 30.0
    max_attempts: int = 8
    step_timeout_secs: float = 120.0
    deadline_secs: float = 3600.0
    max_parallel_steps: int = 4
    max_turns: int = 6  # LLM turns per step in the tool-calling loop
    approval_timeout_secs: float = 1800.0  # an undecided approval is rejected after this
    tool_max_attempts: int = 3
    # run_tool's heartbeat timeout: how soon a cancel reaches a running tool.
    tool_heartbeat_secs: float = 10.0
    max_tool_calls_per_turn: int = 8  # calls beyond this in one LLM reply are refused, not run
    # Continue-as-new once history has this many events; 0 = only when Temporal suggests it.
    continue_as_new_events: int = 0
    plan_timeout_secs: float = 0.0  # start_to_close of plan_task; 0 = step_timeout_secs


@dataclass
class TaskInput:
    task_id: str
    user_id: str
    policy: ExecutionPolicy = field(default_factory=ExecutionPolicy)
    # Keep the UserId/TaskStatus search attributes current (off where they are not registered).
    search_attributes: bool = False
    # The task has a webhook_url (in tasks.options): send it when the task ends.
    webhook: bool = False
    # Submitted under its user's concurrency bound (tasks.max_running): take a slot first.
    bounded: bool = False
    # Step titles (derived from the user's text) in the workflow's current details, which
    # every Web UI user can read (ORCH_TEMPORAL_USER_TEXT).
    show_user_text: bool = False
    # Set when an earlier run of this task handed over by continue-as-new.
    resume: Resume | None = None


@dataclass
class StepProgress:
    """A step that was in its tool loop at the hand-over: it goes on at `turn`."""

    index: int
    turn: int


@dataclass
class Resume:
    """What a run hands to the next one at continue-as-new. The conversation itself is in
    Postgres; this is only what the workflow decided so far."""

    steps: list[PlannedStep]
    done: list[StepResult] = field(default_factory=list)
    in_progress: list[StepProgress] = field(default_factory=list)
    started_at: float = 0.0  # epoch seconds of the first run: the deadline counts from there
    runs: int = 1  # runs so far, this one included


@dataclass
class TaskOutcome:
    task_id: str
    status: str
    result_preview: str = ""


@dataclass
class PlanInput:
    task_id: str


@dataclass
class PlannedStep:
    index: int
    agent: str
    title: str
    depends_on: list[int] = field(default_factory=list)


@dataclass
class PlanResult:
    steps: list[PlannedStep]
    fallback: bool = False


@dataclass
class StepInput:
    task_id: str
    index: int
    agent: str
    depends_on: list[int] = field(default_factory=list)
    turn: int = 0
    max_turns: int = 6
    max_tool_calls: int = 8


@dataclass
class ToolCallRef:
    """A validated tool call the workflow must run: names only, arguments stay in Postgres."""

    seq: int  # position in the LLM's reply; with (task, step, turn) the row's key
    call_id: str
    tool: str
    timeout_secs: float = 10.0
    approval_id: str | None = None  # set when a human must approve the call first


@dataclass
class StepResult:
    """done=True: the model answered. Otherwise it asked for `tool_calls` (rejected ones are
    already answered in Postgres and not listed) and the step goes on with turn + 1."""

    index: int
    done: bool
    preview: str = ""
    model: str = ""
    turn: int = 0
    tool_calls: list[ToolCallRef] = field(default_factory=list)


@dataclass
class ToolInput:
    task_id: str
    index: int
    turn: int
    seq: int
    decision: str | None = None  # approve | reject | timeout, for calls that needed approval
    comment: str | None = None
    decided_by: str | None = None


@dataclass
class ToolResult:
    seq: int
    status: str  # succeeded | failed | rejected
    preview: str = ""


@dataclass
class ApprovalDecision:
    """Sent by POST /tasks/{id}/approvals/{approval_id} as a Temporal update."""

    approval_id: str
    decision: str  # approve | reject
    comment: str | None = None
    user_id: str | None = None


@dataclass
class FinishInput:
    task_id: str
    status: str  # completed | failed | cancelled
    error: str | None = None
    failed_step: int | None = None
    # The task held one of this user's running slots: hand it on to their oldest queued task.
    free_slot_of: str | None = None


# --- maintenance (workflows/maintenance.py, started by Temporal Schedules) --------------------


@dataclass
class MaintenanceInput:
    """`older_than_secs` is the age cut-off (audit retention or key purge grace); None = from
    settings. Short-term memory entries carry their own expiry and ignore it."""

    older_than_secs: float | None = None


@dataclass
class MaintenanceResult:
    deleted: int = 0
    archived: int = 0
    archive_file: str = ""


@dataclass
class WebhookInput:
    """send_webhook: the URL and the body are read from Postgres, not carried in history."""

    task_id: str

