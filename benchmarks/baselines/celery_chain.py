"""The Celery + Redis baseline: a chain of 3 tasks, each making the same chat completion call.

Worker: `python -m celery -A benchmarks.baselines.celery_chain worker -P prefork|threads -c N`,
configured by BENCH_CELERY_BROKER (a Redis URL with a dedicated DB number) and BENCH_LLM_URL.
Sync openai client (retries off) per thread, since Celery tasks are synchronous."""

from __future__ import annotations

import os
import threading

from celery import Celery
from openai import OpenAI

BROKER = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/13")
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "bench")

app = Celery("bench_chain", broker=BROKER, backend=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    task_acks_late=False,
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_local = threading.local()


def _client() -> OpenAI:
    client = getattr(_local, "client", None)
    if client is None:
        client = OpenAI(base_url=os.environ["BENCH_LLM_URL"], api_key="bench", max_retries=0, timeout=60)
        _local.client = client
    return client


@app.task(name="bench.llm_call")
def llm_call(text: str) -> str:
    resp = _client().chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": text[:200]}], max_tokens=1024
    )
    return resp.choices[0].message.content or ""
