"""Readiness checks behind `/readyz`: each returns a small detail dict or raises.

Worker check: `DescribeTaskQueue` lists the pollers the matching service has seen with their
`last_access_time`. A live worker re-polls at least once per long-poll interval (≈ 60 s on an
idle queue), and a stopped worker stays in the list for minutes, so "ready" means: some poller
was seen within `ORCH_READYZ_POLLER_MAX_AGE_SECS` (default 60 s) on both the workflow and the
activity queue.

Hooks other modules fill in (checked only when present):
- `app.state.embedder` with `.loaded` — the embedding model (memory module);
"""

from __future__ import annotations

import time
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client


class NotReady(Exception):
    pass


async def task_queue_pollers(client: Client, namespace: str, task_queue: str) -> dict[str, Any]:
    """Age in seconds of the most recent poll, per queue type."""
    ages: dict[str, float | None] = {}
    now = time.time()
    for name, kind in (
        ("workflow", TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        ("activity", TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
    ):
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=namespace, task_queue=TaskQueue(name=task_queue), task_queue_type=kind
            )
        )
        seen = [p.last_access_time.ToDatetime().timestamp() for p in resp.pollers if p.HasField("last_access_time")]
        ages[name] = round(now - max(seen), 1) if seen else None
    return {"task_queue": task_queue, "last_poll_age_secs": ages}


async def worker_check(client: Client, namespace: str, task_queue: str, max_age: float) -> dict[str, Any]:
    detail = await task_queue_pollers(client, namespace, task_queue)
    stale = [k for k, age in detail["last_poll_age_secs"].items() if age is None or age > max_age]
    if stale:
        raise NotReady(
            f"no worker polled task queue {task_queue!r} ({'/'.join(stale)}) in the last {max_age:g}s"
        )
    return detail


def embedder_check(embedder: Any) -> dict[str, Any]:
    if not getattr(embedder, "loaded", True):
        raise NotReady("embedding model not loaded")
    return {"model": str(getattr(embedder, "name", "loaded"))}

