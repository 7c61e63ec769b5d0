"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.deps import ServicesDep
from api.errors import ERROR_RESPONSES
from api.services import Services
from backends.router import BackendRouter

router = APIRouter(tags=["health"], responses=ERROR_RESPONSES)

PROBE_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is not answering"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """The database (and Redis, when configured) answer, and every model that has been
    loaded has a healthy backend (a dead engine thread or unreachable inference servers
    make this 503), and no model is still loading or warming up at startup; 503 otherwise."""
    checks = {"database": await _database_ok(services)}
    if services.redis is not None:
        checks["redis"] = await _redis_ok(services)
    generation = services.generation
    router = generation.router if generation is not None else None
    if generation is not None and generation.loading:  # preloading and warming up
        checks["models"] = False
    elif router is not None and router.started:  # in development models load on first use
        checks["models"] = await _models_ok(router)
    ready = all(checks.values())
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": {name: "ok" if ok else "unavailable" for name, ok in checks.items()},
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def _database_ok(services: Services) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S), services.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError):
        return False
    return True


async def _models_ok(router: BackendRouter) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            return await router.ready()
    except TimeoutError:
        return False


async def _redis_ok(services: Services) -> bool:
    assert services.redis is not None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await services.redis.ping()
    except (RedisError, OSError, TimeoutError):
        return False
    return True
