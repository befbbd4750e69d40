"""Fixtures for tests that run real agents against the fake cloud over an in-memory broker: `keys`,
`broker`, `cloud` and `make_agent`. Shared by the agent's unit tests and the attack tests (each imports
them in its conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent
from edge_agent.config import load_settings
from edge_agent.messages import offline_will
from edge_agent.transport import MemoryBroker, MemoryTransport
from support.fake_cloud import FakeCloud, MakeAgent
from support.releases import Keys, fake_load_model, make_keys


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def cloud(broker: MemoryBroker) -> FakeCloud:
    return FakeCloud.in_memory(broker)


@pytest.fixture
def make_agent(tmp_path: Path, broker: MemoryBroker, keys: Keys) -> Iterator[MakeAgent]:
    """make_agent(device_id="dev-1", *, start=True, store=None, clock=None, runtimes=None, runner=None, **settings).

    Agents get a state dir under tmp_path named after the device (so a second agent with the same id is a
    restart of the first), the fake model loader, a fast tick, and are stopped after the test."""
    agents: list[Agent] = []

    def make(
        device_id: str = "dev-1",
        *,
        start: bool = True,
        store: Any = None,
        clock: Any = None,
        runtimes: list[str] | None = None,
        load_model: Any = fake_load_model,
        transport: Any = None,
        runner: Any = None,
        **overrides: Any,
    ) -> Agent:
        values: dict[str, Any] = {
            "device_id": device_id,
            "state_dir": tmp_path / "state" / device_id,
            "trust_path": keys.trust_path,
            "grpc_address": "",
            "telemetry_interval_s": 3600.0,
            "telemetry_first_window_rows": 0,  # windows only when a test flushes them (or asks for early ones)
            "sample_rate": 0.0,
            "chunk_timeout_s": 5.0,
            "chunk_max_retries": 2,
        }
        values.update(overrides)
        settings = load_settings(**values)
        agent = Agent(
            settings,
            transport or MemoryTransport(broker, will=offline_will(device_id, fleet=keys.fleet)),
            store=store,
            clock=clock,
            load_model=load_model,
            runtimes=runtimes if runtimes is not None else ["onnxruntime"],
            tick_interval_s=0.01,
            runner=runner,
        )
        agents.append(agent)
        if start:
            agent.start()
        return agent

    yield make
    for agent in agents:
        agent.stop()
