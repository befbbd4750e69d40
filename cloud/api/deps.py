"""What routes depend on: the services of the running stack and a database session per request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from cloud.db import read_only
from cloud.db.engine import API_THREADS
from cloud.errors import ServiceUnavailableError
from cloud.rollout import Deployer, RolloutController

# methods whose routes never write: cloud.api.auth lets a viewer call them, get_session reads only
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class AppServices:
    engine: Engine
    deployer: Deployer
    rollouts: RolloutController | None = None  # None in apps built without the controller (some tests)
    # the broker URL enrolled devices are told to use (settings.device_mqtt_url, else the cloud's own)
    device_mqtt_url: str | None = None
    # name -> probe returning a JSON-able status (e.g. {"connected": True}); shown by /healthz
    probes: dict[str, Callable[[], Any]] = field(default_factory=dict)
    # called with a device id once its revocation is committed (the embedded broker disconnects it)
    on_device_revoked: Callable[[str], None] | None = None
    # requests holding a session at once (made on first use, inside the server's event loop)
    session_slots: asyncio.Semaphore | None = field(default=None, repr=False)


async def get_services(request: Request) -> AppServices:
    # async: no I/O here, and a sync dependency would cost a hop to a worker thread per request
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[AppServices, Depends(get_services)]


async def get_session(request: Request, services: ServicesDep) -> AsyncIterator[Session]:
    """A session per request, at most API_THREADS at once. A session holds its connection until the
    request ends, also while the request waits for a worker thread; unbounded, 100 concurrent requests
    took every pooled connection while those that held the threads waited for one: nobody finished. The
    wait for a slot is here on the event loop, where it occupies no thread."""
    if services.session_slots is None:
        services.session_slots = asyncio.Semaphore(API_THREADS)
    # a GET reads: on SQLite its transaction then runs beside others instead of queueing for the write lock
    engine = read_only(services.engine) if request.method in READ_METHODS else services.engine
    async with services.session_slots:
        session = Session(engine)
        try:
            yield session
        except PoolTimeout:
            raise ServiceUnavailableError("the cloud is busy: no database connection free; retry shortly") from None
        finally:
            await run_in_threadpool(session.close)  # a rollback on the database: not on the event loop


SessionDep = Annotated[Session, Depends(get_session)]
