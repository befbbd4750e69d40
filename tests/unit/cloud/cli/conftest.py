"""Fixtures of the CLI tests: a data dir, the database `edgefleet tokens` and `up` use for it, and a real
console API on uvicorn over that database (`api_url`)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import Engine
from support.net import wait_until

from cloud.api import AppServices, create_app
from cloud.cli import main
from cloud.db import make_engine
from cloud.rollout import Deployer
from cloud.rollout.director import Director
from cloud.settings import CloudSettings
from edge_agent.transport import MemoryBroker, MemoryTransport


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def db_engine(data_dir: Path) -> Iterator[Engine]:
    """The database `edgefleet tokens` and `up` use by default for data_dir."""
    main(["tokens", "list", "--data-dir", str(data_dir)])  # creates the tables
    engine = make_engine(CloudSettings(data_dir=data_dir).database)
    yield engine
    engine.dispose()


@pytest.fixture
def api_url(db_engine: Engine, data_dir: Path, director: Director) -> Iterator[str]:
    transport = MemoryTransport(MemoryBroker())
    transport.start()
    deployer = Deployer(db_engine, transport, director=director, chunk_size_bytes=1024)
    services = AppServices(engine=db_engine, deployer=deployer)
    app = create_app(CloudSettings(data_dir=data_dir), services)
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(5)
