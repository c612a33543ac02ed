"""/memory: write, search and delete the caller's long-term memories.

Thin handlers over `memory.service.MemoryService` (built once per process in the app's
lifespan). Embedding runs in a thread inside the service, so these handlers never block the
event loop.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import SettingsDep, require
from api.errors import ERROR_RESPONSES, APIError
from api.rate_limits import rate_limited
from api.schemas import (
    DESCRIPTION_PATTERN,
    check_metadata,
    metadata_schema,
    optional_metadata_schema,
)
from durable_orchestrator.auth.api_keys import Principal
from memory.service import MemoryService

router = APIRouter(prefix="/memory", tags=["memory"], responses=ERROR_RESPONSES)

ReadUser = Annotated[Principal, require("memory:read")]
WriteUser = Annotated[Principal, require("memory:write")]


async def get_memory(request: Request) -> MemoryService:
    return request.app.state.memory


MemoryDep = Annotated[MemoryService, Depends(get_memory)]


# Per user, separately from task submission (MEMORY_SEARCH_RATE_LIMIT).
memory_search_rate_limit = rate_limited("memory_search", "memory_search_rate_limit", per="user")


class MemoryCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "Q3 revenue grew 12% year on year",
                                         "metadata": {"project": "q3-report"}}]},
    )

    text: str = Field(
        min_length=1, description="What to remember (limit: ORCH_MEMORY_MAX_TEXT_CHARS).",
        json_schema_extra={"pattern": DESCRIPTION_PATTERN},
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="JSON object; searchable by equality.",
        json_schema_extra=metadata_schema,
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text must not be blank")
        if "\x00" in v:  # PostgreSQL's text cannot store NUL
            raise ValueError("text must not contain NUL characters")
        return v

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_metadata(v)


class MemoryCreated(BaseModel):
    id: int


class MemorySearch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"query": "how did sales change last quarter", "limit": 5,
                                         "filter": {"project": "q3-report"}}]},
    )

    query: str = Field(min_length=1, max_length=2_000, json_schema_extra={"pattern": "\\S"})
    limit: int = Field(5, ge=1, le=100)
    filter: dict[str, Any] | None = Field(
        None, description="Only memories whose metadata contains these key/value pairs.",
        json_schema_extra=optional_metadata_schema,
    )

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query must not be blank")
        return v

    @field_validator("filter")
    @classmethod
    def _bounded(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return v if v is None else check_metadata(v)


class MemoryHit(BaseModel):
    id: int
    text: str
    score: float
    metadata: dict[str, Any]
    task_id: str | None


class MemorySearchResults(BaseModel):
    results: list[MemoryHit]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=MemoryCreated,
    summary="Remember a text",
)
async def create_memory(
    body: MemoryCreate, principal: WriteUser, memory: MemoryDep, settings: SettingsDep
) -> MemoryCreated:
    if len(body.text) > settings.memory_max_text_chars:
        raise APIError(
            422, "validation_error",
            f"invalid request: text (at most {settings.memory_max_text_chars} characters)",
            [{"field": "text", "message": f"longer than {settings.memory_max_text_chars} characters"}],
        )
    memory_id = await memory.add(principal.user_id, body.text, metadata=body.metadata)
    return MemoryCreated(id=memory_id)


@router.post(
    "/search",
    response_model=MemorySearchResults,
    summary="Search your memories by meaning",
    dependencies=[memory_search_rate_limit],
)
async def search_memory(body: MemorySearch, principal: ReadUser, memory: MemoryDep) -> MemorySearchResults:
    hits = await memory.search(principal.user_id, body.query, body.limit, body.filter)
    return MemorySearchResults(results=[MemoryHit(**h.as_dict()) for h in hits])


@router.delete(
    # `:int`, so /memory/search with another method is a 405 (it exists), not a 422 here.
    "/{memory_id:int}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Forget a memory",
)
async def delete_memory(memory_id: int, principal: WriteUser, memory: MemoryDep) -> Response:
    if memory_id <= 0 or memory_id >= 2**63 or not await memory.delete(principal.user_id, memory_id):
        raise APIError(404, "not_found", f"memory {memory_id} not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
