"""Worker of the raw Temporal SDK baseline: `python -m benchmarks.baselines.raw_worker
--address HOST:PORT --task-queue Q --llm-url URL`. Each activity makes the same chat
completion call the product's steps make (openai SDK, retries off) against the same fake."""

from __future__ import annotations

import argparse
import asyncio
import signal

from openai import AsyncOpenAI
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from benchmarks.baselines.raw_workflow import (
    RAW_ACTIVITY,
    RAW_NOOP_ACTIVITY,
    RawPlanStepsFinish,
    RawPlanStepsLocalFinish,
    RawThreeSteps,
)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--llm-url", required=True)
    args = parser.parse_args()

    llm = AsyncOpenAI(base_url=args.llm_url, api_key="bench", max_retries=0, timeout=60)

    @activity.defn(name=RAW_ACTIVITY)
    async def raw_llm_call(text: str) -> str:
        resp = await llm.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": text[:200]}],
            max_tokens=1024,
        )
        return resp.choices[0].message.content or ""

    @activity.defn(name=RAW_NOOP_ACTIVITY)
    async def raw_noop(text: str) -> str:
        return text[:200]

    client = await Client.connect(args.address)
    worker = Worker(
        client,
        task_queue=args.task_queue,
        workflows=[RawThreeSteps, RawPlanStepsFinish, RawPlanStepsLocalFinish],
        activities=[raw_llm_call, raw_noop],
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
    await llm.close()


if __name__ == "__main__":
    asyncio.run(main())
