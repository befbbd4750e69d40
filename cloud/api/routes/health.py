from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from cloud.api.deps import ServicesDep, SessionDep
from cloud.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(session: SessionDep, services: ServicesDep) -> Health:
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
    return Health(status="degraded" if degraded else "ok", database=database, components=components)
