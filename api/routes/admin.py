"""/admin: operator actions that need the `admin` scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from api.deps import EngineDep, RequestID, require
from api.errors import ERROR_RESPONSES
from api.schemas import TokenRevoke, TokenRevoked
from durable_orchestrator.auth import bearer
from durable_orchestrator.auth.api_keys import Principal

router = APIRouter(prefix="/admin", tags=["admin"], responses=ERROR_RESPONSES)

AdminUser = Annotated[Principal, require("admin")]


@router.post("/tokens/revoke", response_model=TokenRevoked, summary="Revoke a bearer token by its jti")
async def revoke_token(
    body: TokenRevoke, principal: AdminUser, engine: EngineDep, rid: RequestID
) -> TokenRevoked:
    """Every JWT carrying this `jti` is refused from now on, on every replica (the check reads
    Postgres). Same as `orchestrator tokens revoke JTI`."""
    created = await bearer.revoke(
        engine, body.jti, actor=principal.user_id, reason=body.reason, request_id=rid
    )
    return TokenRevoked(jti=body.jti, revoked=created)
