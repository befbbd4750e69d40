"""GET /healthz: the database and the cloud's parts, answered from a cache at most `health_cache_s` old.

Anyone may call it, and load balancers and flooders do: each answer used to run a query and, in an API
process, ask the core over its pipe for five probes, one request at a time. Now one load a `health_cache_s`
(1 s) is shared by every request in that time (`cloud.api.read_cache.ReadCache`: single-flight, refreshed
ahead), and `ConsoleApp` answers GET /healthz from it before routing (`health_answer`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from sqlalchemy import text
from sqlmodel import Session

from cloud.api.compression import CachedAnswer
from cloud.api.deps import AppServices, read_in_thread
from cloud.api.read_cache import ReadCache
from cloud.api.schemas import Health

router = APIRouter(tags=["health"])
HEALTH_KEY = "healthz"


@router.get("/healthz", response_model=Health)
async def healthz(request: Request) -> Response:
    return (await health_answer(request.app)).response(request.scope)


async def health_answer(app: FastAPI) -> CachedAnswer:
    """The health answer from the app's health cache, loaded (once for all waiting requests) when stale."""
    services: AppServices = app.state.services
    cache: ReadCache[CachedAnswer] = app.state.health_cache

    async def load() -> CachedAnswer:
        return await read_in_thread(services, lambda session: CachedAnswer.of(_check(session, services)))

    return await cache.get(HEALTH_KEY, load)


def _check(session: Session, services: AppServices) -> bytes:
    try:
        session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # a health probe reports failures, it does not raise them
        database = f"error: {exc.__class__.__name__}"
    components: dict[str, Any] = {}
    for name, probe in services.probes.items():
        try:
            components[name] = probe()
        except Exception as exc:
            components[name] = {"error": str(exc)}
    degraded = database != "ok" or any(
        isinstance(c, dict) and (c.get("error") or c.get("connected") is False) for c in components.values()
    )
    health = Health(status="degraded" if degraded else "ok", database=database, components=components)
    return health.model_dump_json().encode()
