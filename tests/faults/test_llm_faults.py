"""LLM provider faults end to end: real Temporal, real Postgres, the fake LLM over HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import defaultdict

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from durable_orchestrator.auth.api_keys import create_key
from durable_orchestrator.devstack import temporal_binary
from fake_openai import Faults, Reply
from tests.utils import Stack, running_stack


def _body_key(body: dict | None) -> str:
    return json.dumps(body, sort_keys=True)


async def _ledger(stack: Stack, task_ids: list[str]) -> list:
    """The calls that count: a failed call's reservation is released."""
    async with stack.engine.connect() as conn:
        return (
            await conn.execute(
                sa.text(
                    "SELECT task_id, step_index, purpose, model FROM llm_calls "
                    "WHERE task_id = ANY(:t) AND status <> 'released' ORDER BY id"
                ),
                {"t": task_ids},
            )
        ).all()


async def test_storm_of_429_and_500_all_tasks_complete(base_settings, temporal_client, fake_llm) -> None:
    async with running_stack(
        base_settings, temporal_client, fake_llm, retry_max_attempts=20, retry_max_interval_secs=1.0
    ) as stack:
        fake_llm.faults = Faults(rate_429=0.3, retry_after=1.0, rate_500=0.1, seed=4)
        ids = await asyncio.gather(*(stack.submit(f"Storm task number {i}") for i in range(20)))
        tasks = [await stack.wait(t, timeout=120) for t in ids]

    assert [t["status"] for t in tasks] == ["completed"] * 20, [t["error"] for t in tasks]
    reqs = list(fake_llm.requests)
    assert sum(r.fault == "429" for r in reqs) >= 10 and sum(r.fault == "500" for r in reqs) >= 3

    # No call was retried before the provider's Retry-After: group requests by identical body
    # (a retry resends the same messages; every step's and task's prompt differs).
    by_body: dict[str, list] = defaultdict(list)
    for r in reqs:
        by_body[_body_key(r.body)].append(r)
    checked = 0
    for group in by_body.values():
        group.sort(key=lambda r: r.received_monotonic)
        for prev, nxt in itertools.pairwise(group):
            if prev.status == 429:
                checked += 1
                assert nxt.received_monotonic >= prev.responded_monotonic + 1.0 - 0.01, (
                    "retried before Retry-After",
                    nxt.received_monotonic - prev.responded_monotonic,
                )
    assert checked >= 10

    # One ledger row per successful provider answer, none for a failed one, and every plan and
    # step has its row. (An attempt that timed out after its answer arrived was still paid:
    # its row stays next to the retry's, so a step may have two.)
    rows = await _ledger(stack, ids)
    per_step = defaultdict(int)
    for r in rows:
        per_step[(r.task_id, r.purpose, r.step_index)] += 1
    steps = sum(len(t["steps"]) for t in tasks)
    assert len(per_step) == steps + 20
    assert len(rows) == sum(r.status == 200 for r in reqs)


async def test_non_retryable_400_on_a_step_fails_once_with_the_provider_message(stack: Stack) -> None:
    def responder(body: dict) -> Reply | None:
        if body.get("response_format"):
            return None  # plans are fine
        return Reply(status=400, content="This model's maximum context length is 10 tokens.")

    stack.fake.responder = responder
    task_id = await stack.submit("Explain how tides work")
    task = await stack.wait(task_id)

    assert task["status"] == "failed"
    assert "maximum context length is 10 tokens" in task["error"]
    assert "400" in task["error"]
    failed = [s for s in task["steps"] if s["status"] == "failed"]
    assert len(failed) == 1 and "maximum context length" in failed[0]["error"]
    step_bodies = [_body_key(r.body) for r in stack.fake.requests if not r.body.get("response_format")]
    assert step_bodies and len(step_bodies) == len(set(step_bodies))  # nothing sent twice


async def _readyz_breakers(stack: Stack) -> dict[str, dict]:
    admin, _ = await create_key(stack.engine, f"ops-{uuid.uuid4().hex[:6]}", scopes=("admin",))
    resp = await stack.http.get("/readyz", headers={"X-API-Key": admin})  # details: admin only
    assert resp.status_code == 200, resp.text  # an open breaker never makes us unready
    return {b["model"]: b for b in resp.json()["checks"]["breakers"]["breakers"]}


async def test_breaker_opens_fallback_answers_probe_closes(base_settings, temporal_client, fake_llm) -> None:
    primary, fallback = f"prim-{uuid.uuid4().hex[:6]}", f"back-{uuid.uuid4().hex[:6]}"
    async with running_stack(
        base_settings, temporal_client, fake_llm,
        model=primary, model_fallbacks=[fallback],
        circuit_breaker_threshold=3, circuit_breaker_timeout_secs=60, retry_max_attempts=10,
        readyz_cache_secs=0,  # each look sees the breaker as it is now
    ) as stack:
        fake_llm.faults = Faults(rate_500=1.0, models={primary})
        first = await stack.wait(await stack.submit("Describe the water cycle"), timeout=60)

        assert first["status"] == "completed", first
        assert {s["model"] for s in first["steps"]} == {fallback}
        assert {r.model for r in await _ledger(stack, [first["id"]])} == {fallback}
        primary_calls = [r for r in fake_llm.requests if r.model == primary]
        assert len(primary_calls) == 3 and all(r.status == 500 for r in primary_calls)
        assert REGISTRY.get_sample_value("circuit_breaker_state", {"model": primary}) == 1
        assert (await _readyz_breakers(stack))[primary]["state"] == "open"

        # While open, nothing reaches the primary model: a second task goes straight to fallback.
        second = await stack.wait(await stack.submit("Describe the carbon cycle"), timeout=60)
        assert {s["model"] for s in second["steps"]} == {fallback}
        assert len([r for r in fake_llm.requests if r.model == primary]) == 3

        # The provider recovers; after the open period one probe goes through and closes it.
        # (The clock is moved on rather than waited for: the open period ends now.)
        fake_llm.faults = Faults()
        async with stack.engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE circuit_breakers SET open_until = now() WHERE key LIKE :k"),
                {"k": f"%:{primary}"},
            )
        deadline = time.monotonic() + 30
        while (await _readyz_breakers(stack))[primary]["state"] == "open":
            assert time.monotonic() < deadline, "breaker never became probe-able"
            await asyncio.sleep(0.2)
        third = await stack.wait(await stack.submit("Describe the nitrogen cycle"), timeout=60)
        assert third["status"] == "completed"
        assert {s["model"] for s in third["steps"]} == {primary}
        assert REGISTRY.get_sample_value("circuit_breaker_state", {"model": primary}) == 0
        assert (await _readyz_breakers(stack))[primary]["state"] == "closed"


def _slow_steps(delay: float):  # type: ignore[no-untyped-def]
    def responder(body: dict) -> Reply | None:
        return None if body.get("response_format") else Reply(delay=delay)

    return responder


async def _wait_step_in_flight(stack: Stack, task_id: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        task = await stack.get(task_id)
        if any(s["status"] == "running" for s in task["steps"]) and any(
            not r.body.get("response_format") for r in stack.fake.requests
        ):
            return
        assert time.monotonic() < deadline, task
        await asyncio.sleep(0.1)


async def test_cancel_interrupts_the_running_call_and_starts_nothing_later(stack: Stack) -> None:
    stack.fake.responder = _slow_steps(8.0)
    task_id = await stack.submit("Write a long essay on the history of tea")
    await _wait_step_in_flight(stack, task_id)

    _other_user, other_key = await stack.new_user()
    resp = await stack.http.post(f"/tasks/{task_id}/cancel", headers={"X-API-Key": other_key})
    assert resp.status_code == 404
    resp = await stack.http.post(f"/tasks/{task_id}/cancel", headers=stack.headers)
    assert resp.status_code == 202, resp.text
    cancelled_at = time.monotonic()

    task = await stack.wait(task_id, timeout=10)
    assert task["status"] == "cancelled"
    statuses = {s["status"] for s in task["steps"]}
    assert statuses <= {"cancelled"}, task["steps"]
    assert all(s["finished_at"] for s in task["steps"])
    # The in-flight call was abandoned by the activity (heartbeat → CancelledError → the HTTP
    # request closed), not answered; and no step request arrived after the cancel.
    step_reqs = [r for r in stack.fake.requests if not r.body.get("response_format")]
    deadline = time.monotonic() + 20
    while any(r.responded_monotonic is None for r in step_reqs):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert all(r.status is None for r in step_reqs), [r.status for r in step_reqs]
    assert all(r.received_monotonic < cancelled_at for r in stack.fake.requests)
    task = await stack.get(task_id)
    assert {s["status"] for s in task["steps"]} <= {"cancelled"}  # the late call changed nothing

    resp = await stack.http.post(f"/tasks/{task_id}/cancel", headers=stack.headers)
    assert resp.status_code == 409
    async with stack.engine.connect() as conn:
        audit = (await conn.execute(sa.text(
            "SELECT actor FROM audit_log WHERE action='task.cancel' AND details->>'task_id' = :t"),
            {"t": task_id})).scalars().all()
    assert audit == [stack.user]  # the accepted cancel, not the refused second one


@pytest.mark.usefixtures("subprocesses")  # the system tier
async def test_cancel_with_the_temporal_cli(stack: Stack, temporal_server) -> None:
    stack.fake.responder = _slow_steps(8.0)
    task_id = await stack.submit("Write a poem about rivers")
    await _wait_step_in_flight(stack, task_id)
    proc = await asyncio.create_subprocess_exec(
        temporal_binary(), "workflow", "cancel", "-w", f"task-{task_id}",
        "--address", temporal_server.address,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, out
    task = await stack.wait(task_id, timeout=10)
    assert task["status"] == "cancelled"


async def test_idempotency_key(stack: Stack) -> None:
    body = {"description": "Summarise the rules of chess"}
    key = {"Idempotency-Key": f"k-{uuid.uuid4().hex}", **stack.headers}
    first = await stack.http.post("/tasks", json=body, headers=key)
    again = await stack.http.post("/tasks", json=body, headers=key)
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = await stack.http.post("/tasks", json={"description": "Something else"}, headers=key)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"

    key = {"Idempotency-Key": f"k-{uuid.uuid4().hex}", **stack.headers}
    resps = await asyncio.gather(*(stack.http.post("/tasks", json=body, headers=key) for _ in range(10)))
    assert sorted(r.status_code for r in resps) == [200] * 9 + [202], [r.text for r in resps]
    ids = {r.json()["id"] for r in resps}
    assert len(ids) == 1
    task_id = ids.pop()
    async with stack.engine.connect() as conn:
        n = (
            await conn.execute(
                sa.text("SELECT count(*) FROM tasks WHERE user_id=:u AND idempotency_key=:k"),
                {"u": stack.user, "k": key["Idempotency-Key"]},
            )
        ).scalar_one()
    assert n == 1
    assert (await stack.wait(task_id))["status"] == "completed"
    # One workflow run: its history has exactly one plan_task activity.
    handle = stack.client.get_workflow_handle(f"task-{task_id}")
    plans = 0
    async for ev in handle.fetch_history_events():
        if ev.HasField("activity_task_scheduled_event_attributes"):
            plans += ev.activity_task_scheduled_event_attributes.activity_type.name == "plan_task"
    assert plans == 1


async def test_shared_rpm_cap_spaces_calls_instead_of_429s(base_settings, temporal_client, fake_llm) -> None:
    model = f"rl-{uuid.uuid4().hex[:6]}"
    async with running_stack(
        base_settings, temporal_client, fake_llm, model=model, llm_rpm=120,
    ) as stack:
        async with stack.engine.begin() as conn:  # an empty bucket: every call must wait its turn
            await conn.execute(
                sa.text("INSERT INTO llm_rate_buckets (key, tokens) VALUES (:k, 0)"),
                {"k": f"rpm:{model}"},
            )
        emptied = time.monotonic()  # the bucket refills from here, however slow the machine is
        ids = await asyncio.gather(*(stack.submit(f"Rate limited task {i}") for i in range(2)))
        tasks = [await stack.wait(t, timeout=60) for t in ids]
    assert [t["status"] for t in tasks] == ["completed"] * 2
    times = sorted(r.received_monotonic for r in fake_llm.requests)
    assert len(times) >= 6
    # 120/minute = one call per 0.5 s from an empty bucket, shared by all activities: n calls
    # need (n - 1) refills since it was emptied (one more of slack for the commit's own time).
    # Measured from the emptying, not from the first call: a loaded machine that starts the
    # first call late has refilled the bucket meanwhile, and the calls then rightly bunch up.
    assert times[-1] - emptied >= 0.5 * (len(times) - 2)
