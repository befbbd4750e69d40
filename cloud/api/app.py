"""The FastAPI application factory and the one place where CloudErrors become HTTP responses."""

from __future__ import annotations

import logging
from functools import partial

from fastapi import Depends, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from cloud.api.auth import API_PREFIX, check_routes
from cloud.api.compression import CachedAnswer, add_compression
from cloud.api.deps import AppServices
from cloud.api.docs import add_offline_docs
from cloud.api.fast_reads import ConsoleApp, FastReads, ReadRoutes
from cloud.api.limits import BodySizeLimit, reject_nul
from cloud.api.public_limit import ClientRate, PublicGate
from cloud.api.read_cache import ForgetReadsOnWrite, ReadCache
from cloud.api.routes import (
    alerts,
    audit,
    deployments,
    devices,
    enrollment,
    experiments,
    feedback,
    health,
    metadata,
    metrics,
    models,
    retraining,
    rollouts,
    tokens,
)
from cloud.api.throttle import RefusalThrottle
from cloud.console import mount_console
from cloud.errors import CloudError
from cloud.identity.token_tags import TagKeys
from cloud.settings import CloudSettings

log = logging.getLogger(__name__)


def create_app(settings: CloudSettings, services: AppServices) -> ConsoleApp:
    app = ConsoleApp(
        title="EdgeFleet console API",
        version="1",
        description="Fleet, model registry, deployments, telemetry and drift of an EdgeFleet installation.",
        docs_url=None,  # add_offline_docs serves /docs and /redoc without a CDN
        redoc_url=None,
        dependencies=[Depends(reject_nul)],
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_body_bytes)
    add_compression(app)  # gzip for the full app's big answers; cached ones are gzipped once (CachedAnswer)
    # list answers and device pages (cloud.api.read_cache); they and token records are served up to one more
    # TTL while a slow reload runs (stale_s)
    app.state.read_cache = ReadCache[CachedAnswer](settings.api_read_cache_s, max_entries=1024,
                                                   stale_s=settings.api_read_cache_s)  # fmt: skip
    app.state.health_cache = ReadCache[CachedAnswer](settings.health_cache_s, max_entries=1)
    app.state.token_cache = ReadCache[object](settings.api_token_cache_s, max_entries=4096,  # cloud.api.auth
                                              stale_s=settings.api_token_cache_s)  # fmt: skip
    app.add_middleware(ForgetReadsOnWrite, cache=app.state.read_cache)
    app.state.read_routes = ReadRoutes()
    # before everything: a repeated GET of a cached answer skips the stack, routing and dependencies
    app.fast_reads = FastReads(routes=app.state.read_routes, reads=app.state.read_cache, tokens=app.state.token_cache)
    app.state.services = services
    app.state.settings = settings
    app.state.enroll_throttle = RefusalThrottle(settings.enroll_refusals_per_minute, 60.0)
    app.state.tag_keys = TagKeys()  # tell token ids we issued from made-up ones (API and enrollment tokens)
    # first of all: a client flooding the paths that need no token is answered 429 before anything runs
    app.public_gate = PublicGate(ClientRate(settings.public_requests_per_s, settings.public_burst),
                                 metrics_public=not settings.metrics_needs_token,
                                 hold_s=settings.public_refusal_hold_s)  # fmt: skip
    app.health = partial(health.health_answer, app)  # GET /healthz from its cache, before routing

    @app.exception_handler(CloudError)
    async def _cloud_error(_request: Request, exc: CloudError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("%s: %s", exc.code, exc)
        headers = getattr(exc, "headers", None)  # e.g. WWW-Authenticate on a 401
        return JSONResponse(
            status_code=exc.status_code, content={"error": exc.code, "detail": str(exc)}, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # the same {"error", "detail"} shape as every other refusal; detail lists what FastAPI found
        # the offending input is left out: it may be a 10,000-item list, or text that cannot be echoed
        errors = [{k: v for k, v in error.items() if k != "input"} for error in exc.errors()]
        body = {"error": "invalid_request", "detail": jsonable_encoder(errors)}
        return JSONResponse(status_code=422, content=body)

    app.include_router(health.router)
    app.include_router(metrics.router)
    add_offline_docs(app)
    for module in (devices, models, retraining, deployments, rollouts, experiments, feedback, metadata, tokens, audit,
                   enrollment, alerts):  # fmt: skip
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(enrollment.public, prefix=API_PREFIX)
    mount_console(app)  # the web console under /console (and / redirects there)
    check_routes(app)  # every /api/v1 (and /metrics) route has made a role decision, or the app does not start
    return app
