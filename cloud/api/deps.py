"""What routes depend on: the services of the running stack and a database session per request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from pydantic import TypeAdapter
from sqlalchemy import Engine
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

# READ_METHODS: methods whose routes never write: cloud.api.auth lets a viewer call them, get_session reads
# only, and they leave the read cache as it is
from cloud.api import paging
from cloud.api.compression import CachedAnswer
from cloud.api.read_cache import READ_METHODS, ReadCache
from cloud.db import read_only
from cloud.db.engine import API_THREADS
from cloud.errors import ServiceUnavailableError
from cloud.rollout import Deployer, RolloutController

V = TypeVar("V")


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
    # runs a champion/challenger retrain (CloudService.retrain); None in apps built without a store
    retrain: Callable[..., Any] | None = None
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
    # a GET reads: on SQLite its transaction then runs beside others instead of queueing for the write lock
    engine = read_only(services.engine) if request.method in READ_METHODS else services.engine
    async with _slots(services):
        session = Session(engine)
        try:
            yield session
        except PoolTimeout:
            raise ServiceUnavailableError("the cloud is busy: no database connection free; retry shortly") from None
        finally:
            await run_in_threadpool(session.close)  # a rollback on the database: not on the event loop


SessionDep = Annotated[Session, Depends(get_session)]


def _slots(services: AppServices) -> asyncio.Semaphore:
    if services.session_slots is None:
        services.session_slots = asyncio.Semaphore(API_THREADS)
    return services.session_slots


async def read_in_thread(services: AppServices, read: Callable[[Session], V]) -> V:
    """`read(session)` on a worker thread with a read-only session of its own, within the same bound on
    sessions as get_session; for async routes and dependencies that need the database only sometimes."""

    def run() -> V:
        with Session(read_only(services.engine)) as session:
            return read(session)

    async with _slots(services):
        try:
            return await run_in_threadpool(run)
        except PoolTimeout:
            raise ServiceUnavailableError("the cloud is busy: no database connection free; retry shortly") from None


async def cached_json(
    request: Request, key: Hashable, read: Callable[[Session], Any], shape: TypeAdapter[Any],
    *, listing: str | None = None,
) -> Response:
    """A list route's answer from the read cache (cloud.api.read_cache): on a miss `read(session)` runs and
    its result is validated and rendered as `shape` once, on the worker thread, and the JSON bytes kept
    (gzipped once too when big: cloud.api.compression). With `listing`, `read` returns a `paging.Page` and
    the answer carries the next page's Link (`key` must then hold the limit and the cursor)."""
    services: AppServices = request.app.state.services
    cache: ReadCache[CachedAnswer] = request.app.state.read_cache

    def render(session: Session) -> CachedAnswer:
        found = read(session)
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if listing is not None:
            headers, found = paging.next_link(request, listing, found), found.rows
        return CachedAnswer.of(shape.dump_json(shape.validate_python(found, from_attributes=True)), headers)

    async def load() -> CachedAnswer:
        return await read_in_thread(services, render)

    answer = await cache.get(key, load)
    routes = getattr(request.app.state, "read_routes", None)
    required = getattr(request.state, "required_role", None)
    if routes is not None and required is not None and request.method == "GET":
        routes.remember(request.scope, key, required)  # the next such GET may take the fast lane
    return answer.response(request.scope)
