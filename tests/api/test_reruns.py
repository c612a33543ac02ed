"""POST /tasks/{id}/rerun on real services: only the step rerun from, the edited steps and
what depends on them call the LLM (fake LLM requests and ledger rows prove it); the rest reuse
the recorded outputs, linked to the task that produced them; /usage says what that saved."""

from __future__ import annotations

import sqlalchemy as sa

from fake_openai import Hold, Reply
from fake_openai.plans import is_plan_request
from planner.agents import AGENTS
from tests.agents.helpers import ledger, plan_reply, user_text
from tests.utils import Stack

# 0 → {1, 2} → 3
DAG = (
    ("researcher", "Gather", []),
    ("analyst", "Analyse", [0]),
    ("writer", "Draft", [0]),
    ("reviewer", "Review", [1, 2]),
)


async def _finished_dag(stack: Stack) -> dict:
    stack.fake.script(plan_reply(*DAG))
    task = await stack.wait(await stack.submit("Report on the price of tea"))
    assert task["status"] == "completed", task
    assert [s["depends_on"] for s in task["steps"]] == [[], [0], [0], [1, 2]]
    return task


async def _rerun(stack: Stack, task_id: str, **body) -> dict:
    resp = await stack.http.post(f"/tasks/{task_id}/rerun", json=body, headers=stack.headers)
    assert resp.status_code == 202, resp.text
    return await stack.wait(resp.json()["id"])


async def _task_count(stack: Stack) -> int:
    async with stack.engine.connect() as conn:
        return (await conn.execute(sa.text("SELECT count(*) FROM tasks"))).scalar_one()


async def test_rerun_from_step_2_calls_the_llm_only_for_step_2_and_its_dependants(
    stack: Stack,
) -> None:
    parent = await _finished_dag(stack)
    parent_ledger = await ledger(stack, parent["id"])
    assert [r.purpose for r in parent_ledger] == ["plan"] + ["step"] * 4

    stack.fake.reset()
    stack.fake.script(Reply(content="new draft"), Reply(content="new review"))
    child = await _rerun(stack, parent["id"], from_step=2)

    assert child["status"] == "completed", child
    assert (child["plan_source"], child["parent_task_id"], child["rerun_of_step"]) == (
        "rerun",
        parent["id"],
        2,
    )
    # Two LLM requests, the steps of 2 and 3; no planning call.
    assert len(stack.fake.requests) == 2
    assert not any(is_plan_request(r.body) for r in stack.fake.requests)
    assert [(r.purpose, r.step_index) for r in await ledger(stack, child["id"])] == [
        ("step", 2),
        ("step", 3),
    ]
    # Steps 0 and 1 keep the parent's outputs, at no cost, linked to the parent.
    for old, new in zip(parent["steps"][:2], child["steps"][:2], strict=True):
        assert (new["reused"], new["reused_from_task_id"], new["status"]) == (
            True,
            parent["id"],
            "completed",
        )
        assert (new["output"], new["model"]) == (old["output"], old["model"])
        assert new["cost"] == {
            "usd": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "llm_calls": None,
        }
    assert [(s["reused"], s["output"]) for s in child["steps"][2:]] == [
        (False, "new draft"),
        (False, "new review"),
    ]
    # Step 3 read the reused output of step 1 and the new output of step 2.
    review_prompt = user_text(stack.fake.requests[1].body)
    assert parent["steps"][1]["output"][:40] in review_prompt
    assert "new draft" in review_prompt
    assert child["result"] == "new review"
    assert child["progress"] == {"steps_done": 4, "steps_total": 4}
    assert child["cost"]["llm_calls"] == 2

    # Lineage both ways; the usage report counts what the two reused steps had cost.
    assert (await stack.get(parent["id"]))["reruns"] == [child["id"]]
    saved = (await stack.http.get("/usage", headers=stack.headers)).json()["saved_by_reuse"]
    reused_rows = [r for r in parent_ledger if r.purpose == "step" and r.step_index in (0, 1)]
    assert saved["reused_steps"] == 2
    assert saved["llm_calls"] == 2
    assert saved["prompt_tokens"] == sum(r.prompt_tokens for r in reused_rows)
    assert saved["completion_tokens"] == sum(r.completion_tokens for r in reused_rows)
    assert saved["cost_usd"] == float(sum(r.cost_usd for r in reused_rows))


async def test_edited_steps_run_again_with_the_new_agent_model_and_text(stack: Stack) -> None:
    parent = await _finished_dag(stack)
    stack.fake.reset()
    child = await _rerun(
        stack,
        parent["id"],
        from_step=3,
        instructions={"1": "Use only 2026 prices"},
        agents={"3": "writer"},
        model="gpt-4o",
    )
    assert child["status"] == "completed", child
    assert [s["reused"] for s in child["steps"]] == [True, False, True, False]
    assert [r.step_index for r in await ledger(stack, child["id"])] == [1, 3]
    analyse, review = stack.fake.requests
    assert "Use only 2026 prices" in user_text(analyse.body)
    assert review.body["messages"][0]["content"] == AGENTS["writer"].system_prompt
    assert {analyse.model, review.model} == {"gpt-4o"}
    assert (child["steps"][1]["instructions"], child["steps"][3]["agent"]) == (
        "Use only 2026 prices",
        "writer",
    )

    # A rerun of the rerun links each reused output to the task that produced it.
    stack.fake.reset()
    grandchild = await _rerun(stack, child["id"], from_step=3)
    assert grandchild["status"] == "completed", grandchild
    assert [s["reused_from_task_id"] for s in grandchild["steps"]] == [
        parent["id"],
        child["id"],
        parent["id"],
        None,
    ]
    assert grandchild["steps"][1]["output"] == child["steps"][1]["output"]
    assert len(stack.fake.requests) == 1
    # gpt-4o came with the first rerun's options: its rerun keeps it.
    assert stack.fake.requests[0].model == "gpt-4o"


async def test_steps_the_parent_did_not_finish_run_again(stack: Stack) -> None:
    linear = (("researcher", "One", []), ("analyst", "Two", [0]), ("writer", "Three", [1]))
    stack.fake.script(
        plan_reply(*linear), Reply(content="first"), Reply(status=400, content="bad request")
    )
    parent = await stack.wait(await stack.submit("Three steps in a row"))
    assert parent["status"] == "failed", parent
    assert [s["status"] for s in parent["steps"]] == ["completed", "failed", "skipped"]

    stack.fake.reset()
    child = await _rerun(stack, parent["id"], from_step=2)
    assert child["status"] == "completed", child
    assert [s["reused"] for s in child["steps"]] == [True, False, False]
    assert [r.step_index for r in await ledger(stack, child["id"])] == [1, 2]


async def test_replan_plans_again_from_the_description(stack: Stack) -> None:
    parent = await _finished_dag(stack)
    stack.fake.reset()
    child = await _rerun(stack, parent["id"], replan=True)
    assert child["status"] == "completed", child
    assert (child["plan_source"], child["parent_task_id"], child["rerun_of_step"]) == (
        "planner",
        parent["id"],
        None,
    )
    assert child["description"] == parent["description"]
    assert sum(1 for r in stack.fake.requests if is_plan_request(r.body)) == 1
    assert not any(s["reused"] for s in child["steps"])


async def test_bad_reruns_are_4xx_naming_the_problem_and_write_nothing(stack: Stack) -> None:
    parent = await _finished_dag(stack)
    pid = parent["id"]
    hold = Hold()
    stack.fake.script(plan_reply(("writer", "Slow", [])), Reply(hold=hold))
    running = await stack.submit("Held")
    # Its step's request held at the fake (not merely "running", which is written before the
    # request is sent): reset below must not hand that request a default reply.
    await hold.reached()
    _, other_key = await stack.new_user()
    stack.fake.reset()
    before = await _task_count(stack)
    cases = [
        ("/tasks/nope/rerun", {"from_step": 0}, stack.headers, 404, None),
        (f"/tasks/{pid}/rerun", {"from_step": 0}, {"X-API-Key": other_key}, 404, None),
        (f"/tasks/{running}/rerun", {"from_step": 0}, stack.headers, 409, None),
        (f"/tasks/{pid}/rerun", {"from_step": 4}, stack.headers, 422, "from_step"),
        (f"/tasks/{pid}/rerun", {"from_step": -1}, stack.headers, 422, "from_step"),
        (f"/tasks/{pid}/rerun", {}, stack.headers, 422, "from_step"),
        (
            f"/tasks/{pid}/rerun",
            {"from_step": 1, "instructions": {"9": "x"}},
            stack.headers,
            422,
            "instructions.9",
        ),
        (
            f"/tasks/{pid}/rerun",
            {"from_step": 1, "instructions": {"one": "x"}},
            stack.headers,
            422,
            "instructions.one",
        ),
        (
            f"/tasks/{pid}/rerun",
            {"from_step": 1, "instructions": {"1": ""}},
            stack.headers,
            422,
            "instructions.1",
        ),
        (
            f"/tasks/{pid}/rerun",
            {"from_step": 1, "agents": {"2": "nobody"}},
            stack.headers,
            422,
            "agents.2",
        ),
        (f"/tasks/{pid}/rerun", {"from_step": 1, "replan": True}, stack.headers, 422, "replan"),
        (f"/tasks/{pid}/rerun", {"from_step": 1, "surprise": 1}, stack.headers, 422, "surprise"),
        (f"/tasks/{pid}/rerun", {"from_step": 1, "model": "  "}, stack.headers, 422, "model"),
    ]
    for url, body, headers, status, field in cases:
        resp = await stack.http.post(url, json=body, headers=headers)
        assert resp.status_code == status, (url, body, resp.text)
        err = resp.json()["error"]
        assert err["code"] and err["message"]
        if status == 409:
            assert err["code"] == "task_not_finished" and "running" in err["message"]
        if field:
            assert field in err["message"], err
            assert any(d["field"] == field for d in err["details"]), err
    assert await _task_count(stack) == before
    assert stack.fake.requests == []
    assert (await stack.get(pid))["reruns"] == []
    await stack.http.post(f"/tasks/{running}/cancel", headers=stack.headers)
    assert (await stack.wait(running))["status"] == "cancelled"
    hold.release()
