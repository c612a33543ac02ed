"""The commands that choose what runs, against the real API on a real socket (real Temporal,
PostgreSQL and a worker, the fake LLM): `submit --agent / --plan` (no planning call) and
`rerun ID --from-step K`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from durable_orchestrator.cli.main import app as cli_app
from tests.agents.helpers import plan_reply
from tests.api.helpers import serve
from tests.utils import Stack


async def _cli(base_url: str, key: str, data_dir: Path, *args: str):  # type: ignore[no-untyped-def]
    env = {"ORCH_API_URL": base_url, "ORCH_API_KEY": key}
    return await asyncio.to_thread(
        CliRunner().invoke, cli_app, [*args, "--data-dir", str(data_dir)], env=env
    )


async def test_rerun_from_step_waits_for_the_new_task(stack: Stack, tmp_path: Path) -> None:
    stack.fake.script(plan_reply(("researcher", "Gather", []), ("writer", "Write", [0])))
    parent = await stack.wait(await stack.submit("Two steps"))
    assert parent["status"] == "completed", parent
    stack.fake.reset()
    app = stack.http._transport.app  # type: ignore[attr-defined]
    async with serve(app) as url:
        result = await _cli(
            url,
            stack.key,
            tmp_path,
            "rerun",
            parent["id"],
            "--from-step",
            "1",
            "--instructions",
            "1=Write it as a haiku",
            "--wait",
            "--timeout",
            "60",
        )
        assert result.exit_code == 0, result.output
        child_id = result.output.split("rerun of ")[1].split(": ")[1].split()[0]
        child = await stack.get(child_id)
        assert (child["parent_task_id"], child["rerun_of_step"]) == (parent["id"], 1)
        assert [s["reused"] for s in child["steps"]] == [True, False]
        assert child["steps"][1]["instructions"] == "Write it as a haiku"
        assert len(stack.fake.requests) == 1

        bad_edit = await _cli(
            url, stack.key, tmp_path, "rerun", parent["id"], "--instructions", "one"
        )
        assert bad_edit.exit_code == 2 and "STEP=VALUE" in bad_edit.output
        out_of_range = await _cli(
            url, stack.key, tmp_path, "rerun", parent["id"], "--from-step", "7"
        )
        assert out_of_range.exit_code == 1
        assert "from_step" in out_of_range.output and "steps 0 to 1" in out_of_range.output
        unknown = await _cli(url, stack.key, tmp_path, "rerun", "nope", "--from-step", "0")
        assert unknown.exit_code == 1 and "not found" in unknown.output
    assert (await stack.get(parent["id"]))["reruns"] == [child_id]


async def test_submit_with_agent_or_plan_makes_no_planning_call(
    stack: Stack, tmp_path: Path
) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(
        json.dumps(
            [
                {"title": "Gather", "agent": "researcher", "instructions": "Find it"},
                {
                    "title": "Write",
                    "agent": "writer",
                    "instructions": "Write it",
                    "depends_on": [0],
                },
            ]
        )
    )
    app = stack.http._transport.app  # type: ignore[attr-defined]
    async with serve(app) as url:
        by_agent = await _cli(
            url, stack.key, tmp_path, "submit", "Proofread this", "--agent", "reviewer"
        )
        assert by_agent.exit_code == 0, by_agent.output
        by_plan = await _cli(
            url, stack.key, tmp_path, "submit", "Two steps", "--plan", str(plan_file)
        )
        assert by_plan.exit_code == 0, by_plan.output
        bad = await _cli(url, stack.key, tmp_path, "submit", "x", "--agent", "nobody")
        assert bad.exit_code == 1 and "unknown agent 'nobody'" in bad.output
    # The id is the last line (the in-process API's log lines land in the same output).
    one = await stack.wait(by_agent.output.split()[-1])
    two = await stack.wait(by_plan.output.split()[-1])
    assert [s["agent"] for s in one["steps"]] == ["reviewer"]
    assert [s["title"] for s in two["steps"]] == ["Gather", "Write"]
    assert (one["plan_source"], two["plan_source"]) == ("client", "client")
    assert len(stack.fake.requests) == 3  # one per step, none for planning
