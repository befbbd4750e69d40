"""The FastAPI application factory and the one place where CloudErrors become HTTP responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from cloud.api.deps import AppServices
from cloud.api.routes import deployments, devices, health, metadata, models
from cloud.errors import CloudError
from cloud.settings import CloudSettings

log = logging.getLogger(__name__)


def create_app(settings: CloudSettings, services: AppServices) -> FastAPI:
    app = FastAPI(
        title="EdgeFleet console API",
        version="1",
        description="Fleet, model registry, deployments, telemetry and drift of an EdgeFleet installation.",
        docs_url="/docs",
    )
    app.state.services = services
    app.state.settings = settings

    @app.exception_handler(CloudError)
    async def _cloud_error(_request: Request, exc: CloudError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("%s: %s", exc.code, exc)
        return JSONResponse(status_code=exc.status_code, content={"error": exc.code, "detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # the same {"error", "detail"} shape as every other refusal; detail lists what FastAPI found
        body = {"error": "invalid_request", "detail": jsonable_encoder(exc.errors())}
        return JSONResponse(status_code=422, content=body)

    app.include_router(health.router)
    for module in (devices, models, deployments, metadata):
        app.include_router(module.router, prefix="/api/v1")
    return app
