"""What routes depend on: the services of the running stack and a database session per request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.rollout import Deployer, RolloutController


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


def get_services(request: Request) -> AppServices:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[AppServices, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with Session(services.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
