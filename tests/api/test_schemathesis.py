"""Schemathesis over the app's own OpenAPI, with a valid key, against the real app on a real
socket backed by real Postgres and Temporal (and a worker): no 5xx, and every response matches
the documented status codes, content types and schemas."""

from __future__ import annotations

import asyncio
import os

import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.client import Client

from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI
from tests.api.helpers import serve
from tests.utils import running_stack

# A fixed number of examples per operation, no time budget: a budget spent on a slow machine
# would leave the operations fuzzed last with no examples at all.
MAX_EXAMPLES = 15
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _run(schema_dict: dict, base_url: str, headers: dict[str, str]) -> dict[str, int]:  # type: ignore[type-arg]
    schema = schemathesis.openapi.from_dict(schema_dict)
    counts: dict[str, int] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == "/readyz":
            continue  # 503 is its documented answer when a dependency is down
        _fuzz(op, f"{op.method.upper()} {op.path}", base_url, headers, counts)
    return counts


def _fuzz(op, label: str, base_url: str, headers: dict[str, str], counts: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    counts[label] = 0

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not os.environ.get("ORCH_FUZZ_RANDOM"),  # set it to explore beyond the fixed seed
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=op.as_strategy())
    def check(case) -> None:  # type: ignore[no-untyped-def]
        counts[label] += 1
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=headers)

    check()


async def test_openapi_fuzz_no_5xx_and_schema_conformance(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    async with running_stack(
        base_settings, temporal_client, fake_llm,
        max_wait_secs=1.0,  # generated ?wait= values stay short
        rate_limit="100000/minute",
        webhook_allowed_hosts=[],  # no generated webhook_url is ever called
    ) as s:
        app = s.http._transport.app  # type: ignore[attr-defined]
        # One real task so GET /tasks has items to serialise.
        await s.wait(await s.submit("seed task"))
        async with serve(app) as base_url:
            docs = await s.http.get("/docs")
            assert docs.status_code == 200 and "swagger" in docs.text.lower()
            counts = await asyncio.to_thread(_run, app.openapi(), base_url, s.headers)
    assert counts and all(n > 0 for n in counts.values()), counts
    assert {"POST /tasks", "GET /tasks", "GET /tasks/{task_id}", "GET /tasks/{task_id}/events"} <= set(counts)


async def test_openapi_documents_errors_tags_and_examples(stack) -> None:  # type: ignore[no-untyped-def]
    spec = (await stack.http.get("/openapi.json")).json()
    assert spec["info"]["title"] and spec["info"]["version"] and spec["info"]["description"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("tags"), (method, path)
            if path.startswith(("/tasks", "/admin")):
                for code in ("401", "403", "404", "409", "422", "429"):
                    ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorEnvelope"), (method, path, code)
            body = op.get("requestBody")
            if body:
                ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
                assert spec["components"]["schemas"][ref].get("examples"), ref
    schemes = spec["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"apiKey", "http"}
