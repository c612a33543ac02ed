"""Bearer JWTs: verification (HS256 shared secret or RS256 public key) and revocation by `jti`.

A token's `sub` is the user, its `scope` claim (space-separated) the scopes, `exp` is required.
Tokens are never stored, logged or echoed; only their `jti` is kept when revoked."""

from __future__ import annotations

import jwt
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.auth.api_keys import ALL_SCOPES, Principal
from durable_orchestrator.data import audit, keys
from durable_orchestrator.settings import Settings


class TokenError(Exception):
    """Why a token was refused, in words safe to return to the caller."""


def _key_and_algorithm(settings: Settings) -> tuple[str, str]:
    alg = settings.jwt_algorithm_effective
    if alg == "RS256" and settings.jwt_public_key:
        return settings.jwt_public_key, "RS256"
    if alg == "HS256" and settings.jwt_secret:
        return settings.jwt_secret, "HS256"
    raise TokenError("bearer tokens are not enabled on this server; use X-API-Key")


def decode(settings: Settings, token: str) -> dict:  # type: ignore[type-arg]
    key, alg = _key_and_algorithm(settings)
    options = {"require": ["exp", "sub"]}
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[alg],  # one algorithm: no alg-confusion between HS256 and RS256
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={**options, "verify_aud": settings.jwt_audience is not None},
            leeway=settings.jwt_leeway_secs,
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidTokenError:
        raise TokenError("invalid token") from None


def _plain(value: object) -> bool:
    """A string PostgreSQL can store and compare: no NUL, no unpaired surrogates."""
    if not isinstance(value, str) or "\x00" in value or len(value) > 200:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def authenticate(engine: AsyncEngine, settings: Settings, token: str) -> Principal:
    claims = decode(settings, token)
    jti = claims.get("jti")
    if jti is not None:
        if not _plain(jti):
            raise TokenError("invalid token")
        if await is_revoked(engine, jti):
            raise TokenError("token revoked")
    sub = claims["sub"]
    if not _plain(sub) or not sub:
        raise TokenError("invalid token")
    scope = claims.get("scope", "")
    scopes = frozenset(s for s in scope.split() if s in ALL_SCOPES) if isinstance(scope, str) else frozenset()
    return Principal(user_id=sub, key_id=f"jwt:{jti or sub}", scopes=scopes)


async def is_revoked(engine: AsyncEngine, jti: str) -> bool:
    return await keys.is_token_revoked(engine, jti)


async def revoke(
    engine: AsyncEngine,
    jti: str,
    *,
    actor: str,
    reason: str | None = None,
    request_id: str | None = None,
) -> bool:
    """Refuse every token carrying this `jti` from now on. True if newly revoked."""
    async with engine.begin() as conn:
        created = await keys.revoke_token(conn, jti, revoked_by=actor, reason=reason)
        await audit.record(
            conn, actor, "token.revoke", "success" if created else "already_revoked",
            request_id, {"jti": jti, "reason": reason},
        )
    return created
