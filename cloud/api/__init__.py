"""The console API (FastAPI): fleet, registry, deployments, telemetry and drift under /api/v1.

`create_app(settings, services)` builds the app; `AppServices` carries what the routes need (database
engine, deployer, health probes). Routes stay thin: data access lives in cloud.registry / cloud.fleet /
cloud.rollout / cloud.monitoring, and CloudError subclasses become JSON errors in one place (app.py).
"""

from cloud.api.app import create_app
from cloud.api.deps import AppServices, ServicesDep, SessionDep

__all__ = ["AppServices", "ServicesDep", "SessionDep", "create_app"]
