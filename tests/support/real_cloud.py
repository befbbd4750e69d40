"""Fixtures for attack tests against the real cloud stack: `cloud`, a CloudService on the test's broker and
database, and `publish(topic, payload)` from a client on that broker (the attacker got in). A module that
imports them uses them in place of the fake cloud tests/attacks/conftest.py provides."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.service import CloudService
from cloud.settings import CloudSettings


@pytest.fixture
def cloud(tmp_path: Path, database_url: str, mqtt_broker: Any) -> Iterator[CloudService]:
    settings = CloudSettings(data_dir=tmp_path / "cloud", database_url=database_url, mqtt_url=mqtt_broker.url,
                             api_port=0)  # fmt: skip
    with CloudService(settings) as service:
        assert service.transport.wait_connected(10)
        yield service


@pytest.fixture
def publish(cloud: CloudService, mqtt_broker: Any, make_transport: Callable[..., Any]) -> Callable[[str, bytes], None]:
    """publish(topic, payload) from a client on the cloud's broker."""
    transport, _inbox = make_transport(broker=mqtt_broker, max_queued=4096)
    return lambda topic, payload: transport.publish(topic, payload)
