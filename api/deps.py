"""FastAPI dependencies, as Annotated aliases the routes declare."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.errors import APIError
from core.apikeys import Principal, authenticate
from core.settings import Settings

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your API key")

HOW_TO_GET_A_KEY = (
    "send an API key in the X-API-Key header; create one with "
    "`orchestrator keys create --user NAME`"
)


def get_engine(request: Request) -> AsyncEngine:
    return request.app.state.engine


def get_temporal(request: Request) -> Client:
    return request.app.state.temporal


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def current_principal(
    request: Request, key: Annotated[str | None, Security(_api_key_header)]
) -> Principal:
    if not key:
        raise APIError(401, "unauthorized", f"missing API key: {HOW_TO_GET_A_KEY}")
    principal = await authenticate(request.app.state.engine, key)
    if principal is None:
        raise APIError(401, "unauthorized", f"invalid, expired or revoked API key: {HOW_TO_GET_A_KEY}")
    request.state.principal = principal
    return principal


EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
CurrentUser = Annotated[Principal, Depends(current_principal)]


def require(scope: str):  # type: ignore[no-untyped-def]
    async def _check(principal: CurrentUser) -> Principal:
        if not principal.has(scope):
            raise APIError(403, "forbidden", f"this key lacks the {scope!r} scope")
        return principal

    return Depends(_check)
