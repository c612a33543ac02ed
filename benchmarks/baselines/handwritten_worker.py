"""Worker of the hand-written baseline: `python -m benchmarks.baselines.handwritten_worker
--address HOST:PORT --task-queue Q --llm-url URL --db-url URL`. Creates its two tables if
missing (in the database it is given), then serves `HandWrittenTask`."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import asyncpg
from openai import AsyncOpenAI
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from benchmarks.baselines.handwritten_workflow import (
    PLAN_ACTIVITY,
    STEP_ACTIVITY,
    HandWrittenTask,
    PlanInput,
    StepInput,
)
from benchmarks.db import libpq_url

SCHEMA = """
CREATE TABLE IF NOT EXISTS hw_tasks (
    id text PRIMARY KEY,
    prompt text NOT NULL,
    status text NOT NULL,
    plan jsonb,
    tokens integer NOT NULL DEFAULT 0,
    result text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS hw_steps (
    task_id text NOT NULL REFERENCES hw_tasks (id),
    index integer NOT NULL,
    output text NOT NULL,
    prompt_tokens integer NOT NULL,
    completion_tokens integer NOT NULL,
    PRIMARY KEY (task_id, index)
);
"""

# The same request shape the product's planner sends (json_schema named "plan"), so the fake
# answers both with the same plan.
PLAN_SCHEMA = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"instructions": {"type": "string"}},
                "required": ["instructions"],
            },
        }
    },
    "required": ["steps"],
}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--llm-url", required=True)
    parser.add_argument("--db-url", required=True)
    args = parser.parse_args()

    llm = AsyncOpenAI(base_url=args.llm_url, api_key="bench", max_retries=0, timeout=60)
    pool = await asyncpg.create_pool(libpq_url(args.db_url), min_size=2, max_size=20)
    await pool.execute(SCHEMA)

    @activity.defn(name=PLAN_ACTIVITY)
    async def hw_plan(task: PlanInput) -> list[str]:
        await pool.execute(
            "INSERT INTO hw_tasks (id, prompt, status) VALUES ($1, $2, 'planning') "
            "ON CONFLICT (id) DO NOTHING",
            task.task_id,
            task.prompt,
        )
        resp = await llm.chat.completions.create(
            model="fake-model",
            messages=[
                {"role": "system", "content": "Plan the work as up to 3 steps."},
                {"role": "user", "content": task.prompt},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "plan", "schema": PLAN_SCHEMA},
            },
        )
        plan = json.loads(resp.choices[0].message.content or "{}")
        steps = [str(s["instructions"]) for s in plan["steps"]]
        tokens = resp.usage.total_tokens if resp.usage else 0
        await pool.execute(
            "UPDATE hw_tasks SET status = 'running', plan = $2, tokens = tokens + $3, updated_at = now() "
            "WHERE id = $1",
            task.task_id,
            json.dumps(steps),
            tokens,
        )
        return steps

    @activity.defn(name=STEP_ACTIVITY)
    async def hw_step(step: StepInput) -> str:
        content = (
            step.instructions if not step.previous else f"{step.instructions}\n\n{step.previous}"
        )
        resp = await llm.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": content[:2000]}],
            max_tokens=1024,
        )
        output = resp.choices[0].message.content or ""
        pt = resp.usage.prompt_tokens if resp.usage else 0
        ct = resp.usage.completion_tokens if resp.usage else 0
        async with pool.acquire() as conn, conn.transaction():
            # Idempotent on retry: the step row is keyed by (task, index).
            await conn.execute(
                "INSERT INTO hw_steps (task_id, index, output, prompt_tokens, completion_tokens) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (task_id, index) DO UPDATE "
                "SET output = EXCLUDED.output, prompt_tokens = EXCLUDED.prompt_tokens, "
                "completion_tokens = EXCLUDED.completion_tokens",
                step.task_id,
                step.index,
                output,
                pt,
                ct,
            )
            await conn.execute(
                "UPDATE hw_tasks SET status = $2, tokens = tokens + $3, result = $4, updated_at = now() "
                "WHERE id = $1",
                step.task_id,
                "completed" if step.last else f"step {step.index + 1} done",
                pt + ct,
                output if step.last else None,
            )
        return output

    client = await Client.connect(args.address)
    worker = Worker(
        client,
        task_queue=args.task_queue,
        workflows=[HandWrittenTask],
        activities=[hw_plan, hw_step],
        max_concurrent_activities=500,
        max_concurrent_workflow_tasks=100,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    run = asyncio.create_task(worker.run())
    print("READY", flush=True)
    await asyncio.wait([run, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if not run.done():
        await worker.shutdown()
    await run
    await pool.close()
    await llm.close()


if __name__ == "__main__":
    asyncio.run(main())
