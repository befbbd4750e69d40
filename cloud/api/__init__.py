"""The console API (FastAPI): fleet, registry, deployments, telemetry, drift, tokens and audit under /api/v1.

`create_app(settings, services)` builds the app; `AppServices` carries what the routes need (database
engine, deployer, health probes). Every /api/v1 route needs a bearer token (`auth`: viewer reads, deployer
or admin writes, admin manages tokens and reads the audit log); every change writes an audit row in its
own transaction. `/healthz`, `/docs` and `/redoc` (assets served locally, `docs`) are open; `/metrics`
(Prometheus) wants a viewer token unless settings leave it open; a client address flooding the open paths
gets 429 (`public_limit`) and /healthz answers from a one-second cache. Requests are bounded (`limits`: body
size, NUL; `cloud.db.bounds`: lists, selectors); fleet-sized lists come in pages (`paging`) and big answers
gzipped (`compression`).
Routes stay thin: data access lives in cloud.registry / cloud.fleet / cloud.rollout / cloud.monitoring /
cloud.identity, and CloudError subclasses become JSON errors in one place (app.py).
"""

from cloud.api.app import create_app
from cloud.api.auth import Authorize, OperatorDep, api_router
from cloud.api.deps import AppServices, ServicesDep, SessionDep

__all__ = ["AppServices", "Authorize", "OperatorDep", "ServicesDep", "SessionDep", "api_router", "create_app"]
