"""Fixtures for the console API's tests: the app on a fresh SQLite database and an in-memory broker, a
client carrying an admin token (`client`), one carrying none (`anonymous`), and `token_for(role)`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.api import AppServices, create_app
from cloud.identity.tokens import Role, create_token
from cloud.rollout import Deployer, Director, RolloutController
from cloud.settings import CloudSettings
from edge_agent.transport import MemoryBroker, MemoryTransport

with warnings.catch_warnings():
    # starlette 1.x asks for `httpx2` in its test client and warns (an error under -W error) when it finds
    # only httpx; the client works the same with either
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

TokenFor = Callable[[str], str]
DEVICE_MQTT_URL = "mqtts://broker.test:8883"  # what enrolled devices are told to use


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def app(request: pytest.FixtureRequest, engine: Engine, broker: MemoryBroker, tmp_path: Path, director: Director,
        keys_dir: Path) -> FastAPI:  # fmt: skip
    """The app; parametrize indirectly with a dict of CloudSettings fields to change its settings."""
    transport = MemoryTransport(broker)
    transport.start()
    deployer = Deployer(engine, transport, director=director, chunk_size_bytes=1024)
    services = AppServices(
        engine=engine,
        deployer=deployer,
        rollouts=RolloutController(deployer),  # not started: the API steps it, tests step it by hand
        probes={"mqtt": lambda: {"connected": transport.connected}},
    )
    overrides = getattr(request, "param", {})
    settings = CloudSettings(data_dir=tmp_path, keys_dir=keys_dir, device_mqtt_url=DEVICE_MQTT_URL, **overrides)
    return create_app(settings, services)


@pytest.fixture
def token_for(engine: Engine) -> TokenFor:
    """token_for(role) -> the text of a new token with that role (committed)."""

    def _token_for(role: str) -> str:
        with Session(engine) as session:
            _, text = create_token(session, name=f"test {role}", role=role, created_by="test")
            session.commit()
        return text

    return _token_for


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def anonymous(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def client(app: FastAPI, token_for: TokenFor) -> Iterator[TestClient]:
    """A client whose every request carries an admin token."""
    with TestClient(app, headers=bearer(token_for(Role.ADMIN))) as test_client:
        yield test_client
