"""Fixtures every part's tests can use: MQTT brokers (a private Mosquitto, the embedded broker, or
whichever this machine has), connected transports, and a clean database per test.

Plain helpers (free_port, wait_until, Inbox, MosquittoBroker) are importable: `from support import ...`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.database import (
    create_schema,
    drop_schema,
    drop_stale_schemas,
    new_schema_name,
    postgres_url_from_env,
    with_search_path,
)
from support.mosquitto import MosquittoBroker, mosquitto_binary
from support.mqtt import Inbox

from cloud.mqtt.broker import EmbeddedBroker
from edge_agent.paho_transport import PahoTransport

BROKER_ENV = "EDGEFLEET_TEST_BROKER"  # "embedded" or "mosquitto" forces the mqtt_broker fixture's choice

_client_numbers = itertools.count()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if postgres_url_from_env() is not None:
        return
    skip = pytest.mark.skip(reason="needs EDGEFLEET_TEST_DATABASE_URL (PostgreSQL)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


# -- MQTT brokers -----------------------------------------------------------------------------------------


@pytest.fixture
def make_mosquitto(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """make_mosquitto(users={"u": "pw"}, persistence=True, port=...) -> a started MosquittoBroker.

    Each call gets its own directory; all are stopped after the test. Skips if mosquitto is absent.
    """
    if mosquitto_binary() is None:
        pytest.skip("mosquitto binary not found")
    brokers: list[MosquittoBroker] = []
    numbers = itertools.count()

    def make(**kwargs: Any) -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path / f"mosquitto-{next(numbers)}", **kwargs)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto_broker(make_mosquitto: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    """A private Mosquitto (anonymous, no persistence) on a free port; `.restart()` keeps the port."""
    return make_mosquitto()


@pytest.fixture
def embedded_broker() -> Iterator[EmbeddedBroker]:
    """The embedded amqtt broker (MQTT 3.1.1) on a free port."""
    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture
def mqtt_broker(request: pytest.FixtureRequest) -> MosquittoBroker | EmbeddedBroker:
    """Mosquitto if it is installed, else the embedded broker; EDGEFLEET_TEST_BROKER forces one.

    Both have .url, .host, .port, .kind ("mosquitto"/"embedded") and .mqtt_protocol ("5"/"3.1.1").
    """
    choice = os.environ.get(BROKER_ENV, "").strip().lower()
    if choice not in ("", "embedded", "mosquitto"):
        raise pytest.UsageError(f"{BROKER_ENV} must be 'embedded' or 'mosquitto', not {choice!r}")
    if choice == "embedded" or (not choice and mosquitto_binary() is None):
        return request.getfixturevalue("embedded_broker")  # type: ignore[no-any-return]
    return request.getfixturevalue("mosquitto_broker")  # type: ignore[no-any-return]


@pytest.fixture(params=["mosquitto", "embedded"])
def each_broker(request: pytest.FixtureRequest) -> MosquittoBroker | EmbeddedBroker:
    """Runs the test once against a private Mosquitto and once against the embedded broker."""
    return request.getfixturevalue(f"{request.param}_broker")  # type: ignore[no-any-return]


@pytest.fixture
def make_transport(request: pytest.FixtureRequest) -> Iterator[Callable[..., tuple[PahoTransport, Inbox]]]:
    """make_transport(*subscriptions, broker=None, client_id=None, connect=True, **PahoTransport kwargs).

    Returns (transport, inbox): a PahoTransport whose messages land in `inbox`, subscribed to the given
    filters, started and connected (unless connect=False), stopped after the test. The broker defaults to
    the `mqtt_broker` fixture; the protocol defaults to the broker's; reconnects are fast.
    """
    transports: list[PahoTransport] = []

    def make(
        *subscriptions: str, broker: Any = None, client_id: str | None = None, connect: bool = True, **kwargs: Any
    ) -> tuple[PahoTransport, Inbox]:
        broker = broker if broker is not None else request.getfixturevalue("mqtt_broker")
        kwargs.setdefault("protocol", getattr(broker, "mqtt_protocol", "5"))
        kwargs.setdefault("reconnect_min_s", 0.1)
        kwargs.setdefault("reconnect_max_s", 1.0)
        transport = PahoTransport(broker.url, client_id or f"test-{os.getpid()}-{next(_client_numbers)}", **kwargs)
        inbox = Inbox()
        transport.set_message_handler(inbox)
        for topic_filter in subscriptions:
            transport.subscribe(topic_filter)
        transports.append(transport)
        if connect:
            transport.start()
            if not transport.wait_connected(10):
                raise AssertionError(f"{transport.client_id} did not connect to {broker.url}: {transport.last_error}")
        return transport, inbox

    yield make
    for transport in transports:
        transport.stop()


# -- databases --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _postgres_base_url() -> str | None:
    url = postgres_url_from_env()
    if url is not None:
        drop_stale_schemas(url)
    return url


@pytest.fixture
def database_url(_postgres_base_url: str | None, tmp_path: Path) -> Iterator[str]:
    """A SQLAlchemy URL to an empty database for this test.

    With EDGEFLEET_TEST_DATABASE_URL: PostgreSQL, in a fresh schema made for this test (the URL sets
    search_path to it; dropped afterwards). Without: a SQLite file in tmp_path.
    """
    if _postgres_base_url is None:
        yield f"sqlite:///{tmp_path / 'edgefleet-test.db'}"
        return
    schema = new_schema_name()
    create_schema(_postgres_base_url, schema)
    try:
        yield with_search_path(_postgres_base_url, schema)
    finally:
        drop_schema(_postgres_base_url, schema)


@pytest.fixture
def postgres_url(_postgres_base_url: str | None, request: pytest.FixtureRequest) -> str:
    """Like database_url but PostgreSQL only: skips without EDGEFLEET_TEST_DATABASE_URL.
    Mark such tests `@pytest.mark.postgres`."""
    if _postgres_base_url is None:
        pytest.skip("needs EDGEFLEET_TEST_DATABASE_URL (PostgreSQL)")
    return request.getfixturevalue("database_url")  # type: ignore[no-any-return]
