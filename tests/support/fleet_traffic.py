"""Live traffic for tests of staged rollouts: a running cloud with its development admin token, and
simulated devices answering requests and sending telemetry windows in the background."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloud.cli.operator_token import ensure_dev_token
from cloud.service import CloudService
from cloud.settings import CloudSettings
from simulator.traffic import Traffic

__all__ = ["Traffic", "cloud_with_token"]


@contextmanager
def cloud_with_token(broker: Any, database_url: str, data_dir: Path) -> Iterator[tuple[CloudService, str]]:
    """A CloudService on `broker` whose rollout controller ticks every 0.5 s, and the admin token `up` made."""
    settings = CloudSettings(data_dir=data_dir, mqtt_url=broker.url, database_url=database_url, api_port=0,
                             rollout_tick_s=0.5)  # fmt: skip
    with CloudService(settings) as service:
        found = ensure_dev_token(service.engine, settings.data_dir)  # type: ignore[arg-type]
        assert found is not None
        yield service, found[0].read_text().strip()
