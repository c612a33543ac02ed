"""Types that cross the Temporal boundary: workflow inputs, activity inputs and results.

Standard library only, so workflow code can import this module inside the sandbox. They carry
ids and short strings; step outputs, prompts and plans live in Postgres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TASK_WORKFLOW = "TaskWorkflow"


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


@dataclass
class TaskInput:
    task_id: str
    user_id: str
    policy: ExecutionPolicy = field(default_factory=ExecutionPolicy)


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


@dataclass
class StepResult:
    index: int
    done: bool
    preview: str = ""
    model: str = ""


@dataclass
class FinishInput:
    task_id: str
    status: str  # completed | failed | cancelled
    error: str | None = None
    failed_step: int | None = None


@dataclass
class RememberInput:
    """remember_result: write a completed task's final result to long-term memory."""

    task_id: str
