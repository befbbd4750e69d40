"""Several ingestion workers on one MQTT shared subscription split the fleet's traffic, and the database's
unique keys keep the result exact."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import Session, select
from support import wait_until
from support.enrollment import enroll

from cloud.db import create_tables, make_engine
from cloud.db.tables import TelemetryRecord
from cloud.monitoring import Ingestor
from cloud.mqtt.router import MessageRouter
from protocols.topics import DEFAULT_FLEET, Channel, device_topic
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration


def test_two_workers_share_the_load_and_store_each_window_once(
    database_url: str, make_transport: Callable[..., Any]
) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    enroll(engine, *(f"dev-{i}" for i in range(4)))
    workers = [Ingestor(engine, batch_size=10) for _ in range(2)]
    for worker in workers:
        transport, _ = make_transport()
        MessageRouter(worker.submit, lambda t, p: None, fleet=DEFAULT_FLEET, share_group="ingest").attach(transport)
        worker.start()
    device, _ = make_transport()
    try:
        for seq in range(1, 41):
            window = pb.TelemetryWindow(schema_version=1, device_id=f"dev-{seq % 4}", seq=seq, inference_count=1)
            device.publish(device_topic(f"dev-{seq % 4}", Channel.TELEMETRY), window.SerializeToString())

        def stored() -> int:
            with Session(engine) as session:
                return int(session.exec(select(func.count()).select_from(TelemetryRecord)).one())

        assert wait_until(lambda: stored() == 40, 15)
        received = [w.stats.snapshot()["received"] for w in workers]
        assert sum(received) == 40 and all(r > 0 for r in received), received
    finally:
        for worker in workers:
            worker.stop()
        engine.dispose()
