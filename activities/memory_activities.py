"""Long-term memory activities: what a completed task found becomes searchable later.

The MemoryService (embedding model + FAISS cache) is worker-scoped, built once in worker.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from temporalio import activity

from durable_orchestrator.data.provenance import task_labels
from durable_orchestrator.data.tasks import task_outcome
from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import REMEMBER_RESULT, RememberInput
from memory.service import MemoryService

log = structlog.get_logger(__name__)


def result_source_key(task_id: str) -> str:
    """One memory per task result, however many times the activity runs."""
    return f"task-result:{task_id}"


@dataclass
class MemoryActivities:
    memory: MemoryService
    settings: Settings

    @activity.defn(name=REMEMBER_RESULT)
    async def remember_result(self, inp: RememberInput) -> int:
        """Store the task's final result as a memory of its user; returns the memory id (0 when
        there is nothing to remember). Idempotent: a retry lands on the same row."""
        if not self.settings.memory_remember_results:
            return 0
        task = await task_outcome(self.memory.engine, inp.task_id)
        if task is None or task.status != "completed" or not (task.result or "").strip():
            return 0
        metadata = {"source": "task_result", "task_id": inp.task_id,
                    "description": task.description[:200]}
        # Marked when the task read untrusted content: searching it later brings that back in.
        labels = await task_labels(self.memory.engine, inp.task_id)
        if labels:
            metadata["labels"] = labels
        memory_id = await self.memory.add(
            task.user_id,
            task.result[: self.settings.memory_result_chars],
            metadata=metadata,
            task_id=inp.task_id,
            source_key=result_source_key(inp.task_id),
        )
        log.info("task_result_remembered", task_id=inp.task_id, memory_id=memory_id)
        return memory_id
