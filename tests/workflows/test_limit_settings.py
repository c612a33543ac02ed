"""The settings behind TaskWorkflow's limits: an approval always times out before the task's
deadline, and limits that could not work are refused at start with the setting's name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import ExecutionPolicy
from durable_orchestrator.temporal.task_start import execution_policy
from tests.cli.test_config import _config


def test_default_approval_timeout_is_shorter_than_the_deadline() -> None:
    policy = execution_policy(Settings())
    assert policy.approval_timeout_secs < policy.deadline_secs
    assert policy.approval_timeout_secs == Settings().task_deadline_secs / 2
    # Also for a workflow started without the API's policy (the contract's own defaults).
    assert ExecutionPolicy().approval_timeout_secs < ExecutionPolicy().deadline_secs


def test_approval_timeout_follows_a_shorter_deadline_when_unset() -> None:
    policy = execution_policy(Settings(task_deadline_secs=600))
    assert (policy.approval_timeout_secs, policy.deadline_secs) == (300, 600)


def test_explicit_limits_reach_the_policy() -> None:
    policy = execution_policy(
        Settings(
            approval_timeout_secs=120,
            max_tool_calls_per_turn=3,
            tool_heartbeat_timeout_secs=4,
            continue_as_new_events=5000,
        )
    )
    assert policy.approval_timeout_secs == 120
    assert policy.max_tool_calls_per_turn == 3
    assert policy.tool_heartbeat_secs == 4
    assert policy.continue_as_new_events == 5000


@pytest.mark.parametrize("approval", [3600, 7200])
def test_approval_timeout_not_below_the_deadline_is_refused(approval: float) -> None:
    with pytest.raises(ValidationError) as err:
        Settings(approval_timeout_secs=approval, task_deadline_secs=3600)
    message = str(err.value)
    assert "ORCH_APPROVAL_TIMEOUT_SECS" in message and "ORCH_TASK_DEADLINE_SECS" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tool_calls_per_turn", 0),
        ("tool_heartbeat_timeout_secs", 0),
        ("approval_timeout_secs", -1),
        ("continue_as_new_events", -1),
    ],
)
def test_limits_that_cannot_work_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as err:
        Settings(**{field: value})
    assert field in str(err.value)


def test_orchestrator_config_refuses_an_approval_timeout_past_the_deadline() -> None:
    result = _config(ORCH_APPROVAL_TIMEOUT_SECS="7200", ORCH_TASK_DEADLINE_SECS="3600")
    assert result.returncode == 1
    stderr = " ".join(result.stderr.split())
    assert (
        "ORCH_APPROVAL_TIMEOUT_SECS (7200) must be shorter than ORCH_TASK_DEADLINE_SECS (3600)"
        in stderr
    )
    assert "Traceback" not in stderr
