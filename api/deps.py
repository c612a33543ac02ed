"""FastAPI dependencies, as Annotated aliases the routes declare."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api import auth_failures
from api.errors import APIError
from durable_orchestrator.auth import bearer
from durable_orchestrator.auth.api_keys import KEY_PREFIX, Principal
from durable_orchestrator.data import audit
from durable_orchestrator.settings import Settings

log = structlog.get_logger(__name__)

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your API key")
_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A JWT signed with the server's HS256 secret or RS256 key; `sub` = user, "
    "`scope` = space-separated scopes, `exp` required.",
)

HOW_TO_GET_A_KEY = (
    "send an API key in the X-API-Key header; create one with "
    "`orchestrator keys create --user NAME`"
)


# Dependencies are async even where they need not await: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hop per dependency per request.
async def get_engine(request: Request) -> AsyncEngine:
    return request.app.state.engine


async def get_temporal(request: Request) -> Client:
    return request.app.state.temporal


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


async def _request_id_dep(request: Request) -> str | None:
    return request_id(request)


def _key_hint(key: str) -> str | None:
    """The public prefix of a well-formed key (as `keys list` shows it), never the secret part."""
    parts = key.split("_")
    if len(parts) == 3 and parts[0] == KEY_PREFIX and len(parts[1]) == 8:
        return parts[1]
    return None


async def _auth_failed(request: Request, reason: str, message: str, **details: str | None) -> APIError:
    """Count the failure against the client's address, audit it (without the credential) while
    the address is within its limit, and build the 401 (the 429 once it is not)."""
    info = {"reason": reason, "method": request.method, "path": request.url.path, **details}
    log.info("auth_failed", **info)
    over_limit = await auth_failures.count_failure(request)
    if over_limit is not None:
        return over_limit
    try:
        await audit.record(request.app.state.engine, "anonymous", "auth.failure", "denied",
                           request_id(request), info)
    except Exception as exc:  # the audit write must not turn a 401 into a 500
        log.warning("audit_write_failed", error=type(exc).__name__)
    return APIError(401, "unauthorized", message)


async def current_principal(
    request: Request,
    key: Annotated[str | None, Security(_api_key_header)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    await auth_failures.refuse_if_exhausted(request)  # before any database work
    if key:
        principal = await request.app.state.key_cache.authenticate(request.app.state.engine, key)
        if principal is None:
            raise await _auth_failed(
                request, "invalid_key",
                f"invalid, expired or revoked API key: {HOW_TO_GET_A_KEY}", key_prefix=_key_hint(key),
            )
    elif credentials is not None:
        try:
            principal = await bearer.authenticate(
                request.app.state.engine, request.app.state.settings, credentials.credentials
            )
        except bearer.TokenError as exc:
            raise await _auth_failed(request, "invalid_token", f"bearer token refused: {exc}") from None
    else:
        raise await _auth_failed(request, "missing", f"missing credentials: {HOW_TO_GET_A_KEY}")
    request.state.principal = principal
    structlog.contextvars.bind_contextvars(user_id=principal.user_id)
    return principal


async def optional_principal(
    request: Request,
    key: Annotated[str | None, Security(_api_key_header)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal | None:
    """None without credentials; credentials that are present are checked like everywhere
    (wrong ones are a 401)."""
    if not key and credentials is None:
        return None
    return await current_principal(request, key, credentials)


EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
CurrentUser = Annotated[Principal, Depends(current_principal)]
MaybeUser = Annotated[Principal | None, Depends(optional_principal)]
RequestID = Annotated[str | None, Depends(_request_id_dep)]


def require(scope: str):  # type: ignore[no-untyped-def]
    async def _check(principal: CurrentUser) -> Principal:
        if not principal.has(scope):
            raise APIError(403, "forbidden", f"these credentials lack the {scope!r} scope")
        return principal

    return Depends(_check)
