"""Human approval of tool calls: pause, approve, reject, double decision, unknown id, timeout."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa
from temporalio.client import Client

from durable_orchestrator.settings import Settings
from durable_orchestrator.tools import REGISTRY
from fake_openai import FakeOpenAI, Reply
from tests.agents.helpers import plan_reply, tool_messages
from tests.utils import Stack, running_stack

EMAIL = {"to": "boss@example.com", "subject": "Weekly report", "body": "All green."}


def _script_email(fake: FakeOpenAI) -> None:
    fake.script(
        plan_reply(("writer", "Email the report", [])),
        Reply(tool_calls=[("send_email", EMAIL)]),
        Reply(content="Done."),
    )


async def _pending(stack: Stack, task_id: str, within: float = 30) -> list[dict]:
    deadline = time.monotonic() + within
    while True:
        resp = await stack.http.get(f"/tasks/{task_id}/approvals", headers=stack.headers)
        assert resp.status_code == 200, resp.text
        items = resp.json()["items"]
        if items:
            return items
        assert time.monotonic() < deadline, "no approval became pending"
        await asyncio.sleep(0.1)


async def _decide(stack: Stack, task_id: str, approval_id: str, decision: str, comment: str | None = None):  # type: ignore[no-untyped-def]
    return await stack.http.post(
        f"/tasks/{task_id}/approvals/{approval_id}",
        json={"decision": decision, "comment": comment},
        headers=stack.headers,
    )


def _last_step_request(fake: FakeOpenAI) -> dict:
    return [r for r in fake.requests if r.body and not r.body.get("response_format")][-1].body


async def test_approval_pauses_then_approve_continues(stack: Stack) -> None:
    _script_email(stack.fake)
    before = REGISTRY.executions["send_email"]
    task_id = await stack.submit("Send the weekly report by email")

    (pending,) = await _pending(stack, task_id)
    assert pending["tool"] == "send_email" and pending["arguments"] == EMAIL
    assert pending["status"] == "awaiting_approval"
    task = await stack.wait(task_id, {"waiting_approval"})
    (call,) = task["steps"][0]["tool_calls"]
    assert call["status"] == "awaiting_approval" and call["approval_id"] == pending["approval_id"]
    assert REGISTRY.executions["send_email"] == before  # nothing sent before approval

    resp = await _decide(stack, task_id, "apr_does_not_exist", "approve")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "approval_not_found"

    resp = await _decide(stack, task_id, pending["approval_id"], "approve", "ok to send")
    assert resp.status_code == 200, resp.text
    assert resp.json()["decision"] == "approve"
    again = await _decide(stack, task_id, pending["approval_id"], "approve")
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "approval_already_decided"
    assert again.json()["error"]["message"]

    task = await stack.wait(task_id)
    assert task["status"] == "completed", task
    (call,) = task["steps"][0]["tool_calls"]
    assert call["status"] == "succeeded" and call["decision"] == "approve"
    assert call["result"] == "email to boss@example.com queued"
    assert REGISTRY.executions["send_email"] == before + 1
    assert tool_messages(_last_step_request(stack.fake))[0]["content"] == call["result"]
    resp = await stack.http.get(f"/tasks/{task_id}/approvals", params={"status": "all"}, headers=stack.headers)
    (decided,) = resp.json()["items"]
    assert decided["decided_by"] == stack.user and decided["decision_comment"] == "ok to send"
    assert (await _decide(stack, task_id, pending["approval_id"], "reject")).status_code == 409
    async with stack.engine.connect() as conn:
        audit = (await conn.execute(sa.text(
            "SELECT actor, outcome, details FROM audit_log WHERE action='approval.decide' "
            "AND details->>'approval_id' = :a"), {"a": pending["approval_id"]})).all()
    assert [(a.actor, a.outcome, a.details["decision"]) for a in audit] == [(stack.user, "success", "approve")]


async def test_rejected_call_is_not_run_and_the_llm_is_told(stack: Stack) -> None:
    _script_email(stack.fake)
    before = REGISTRY.executions["send_email"]
    task_id = await stack.submit("Send the weekly report by email")
    (pending,) = await _pending(stack, task_id)
    # Two reviewers at once: the workflow's update validator lets exactly one through.
    first, second = await asyncio.gather(
        _decide(stack, task_id, pending["approval_id"], "reject", "not before Friday"),
        _decide(stack, task_id, pending["approval_id"], "reject", "not before Friday"),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)

    task = await stack.wait(task_id)
    assert task["status"] == "completed", task
    (call,) = task["steps"][0]["tool_calls"]
    assert call["status"] == "rejected" and call["decision"] == "reject"
    assert REGISTRY.executions["send_email"] == before
    (msg,) = tool_messages(_last_step_request(stack.fake))
    assert msg["content"] == "rejected by reviewer: not before Friday"


async def test_undecided_approval_times_out_as_rejected(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    _script_email(fake_llm)
    async with running_stack(base_settings, temporal_client, fake_llm, approval_timeout_secs=1.0) as stack:
        task_id = await stack.submit("Send the weekly report by email")
        task = await stack.wait(task_id)
        assert task["status"] == "completed", task
        (call,) = task["steps"][0]["tool_calls"]
        assert call["status"] == "rejected" and call["decision"] == "timeout"
        (msg,) = tool_messages(_last_step_request(fake_llm))
        assert msg["content"].startswith("rejected: no reviewer decided")
        resp = await _decide(stack, task_id, call["approval_id"], "approve")
        assert resp.status_code == 409


async def test_cancelled_task_leaves_no_pending_approval(stack: Stack) -> None:
    _script_email(stack.fake)
    task_id = await stack.submit("Send the weekly report by email")
    (pending,) = await _pending(stack, task_id)
    await stack.client.get_workflow_handle(f"task-{task_id}").cancel()
    task = await stack.wait(task_id)
    assert task["status"] == "cancelled", task
    (call,) = task["steps"][0]["tool_calls"]
    assert call["status"] == "rejected" and call["error"].startswith("not run: the task ended first")
    resp = await stack.http.get(f"/tasks/{task_id}/approvals", headers=stack.headers)
    assert resp.json()["items"] == []
    resp = await _decide(stack, task_id, pending["approval_id"], "approve")
    assert resp.status_code == 409


async def test_approvals_of_someone_elses_task_are_not_found(stack: Stack) -> None:
    _script_email(stack.fake)
    task_id = await stack.submit("Send the weekly report by email")
    (pending,) = await _pending(stack, task_id)
    _, other_key = await stack.new_user()
    resp = await stack.http.get(f"/tasks/{task_id}/approvals", headers={"X-API-Key": other_key})
    assert resp.status_code == 404
    resp = await stack.http.post(
        f"/tasks/{task_id}/approvals/{pending['approval_id']}",
        json={"decision": "approve"}, headers={"X-API-Key": other_key},
    )
    assert resp.status_code == 404
    resp = await _decide(stack, task_id, pending["approval_id"], "maybe")
    assert resp.status_code == 422
    assert (await _decide(stack, task_id, pending["approval_id"], "approve")).status_code == 200
    assert (await stack.wait(task_id))["status"] == "completed"
