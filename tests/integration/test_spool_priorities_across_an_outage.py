"""Store-and-forward with priorities, end to end: a real Mosquitto (persistence on), a real cloud and one
agent with a small disk spool (40 messages) serving every 50 ms and closing a telemetry window (and a
sample batch) every 0.5 s. The broker stops for 12 s; the agent restarts in the middle of it. More is
said than the spool holds, so samples must make way: every telemetry window and every event the agent
published is stored exactly once afterwards, the spool counted only samples as dropped, and the next
window reports those drops upward (TelemetryWindow.spool_dropped)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from support import MosquittoBroker
from support.enrollment import enroll
from test_no_loss_across_broker_restarts import RecordingTransport, WindowLog

from cloud.db.tables import DeploymentCreate
from cloud.service import CloudService
from cloud.settings import CloudSettings
from cloud.training.pipeline import TrainingConfig, run_training_pipeline
from edge_agent.agent import Agent
from edge_agent.config import AgentSettings
from edge_agent.connect import transport_for
from protocols.v1 import messages_pb2 as pb
from simulator.devices import SimulatedFleet

pytestmark = pytest.mark.integration

DEVICE = "pq-01"
SPOOL_BOUND = 40
OUTAGE_S = 12.0


def stored(cloud: CloudService, table: str) -> tuple[set[int], int]:
    """The seqs stored for DEVICE in table, and how many rows repeat one."""
    assert cloud.engine is not None
    with cloud.engine.connect() as conn:
        seqs = [r[0] for r in conn.execute(text(f"SELECT seq FROM {table} WHERE device_id = :d"), {"d": DEVICE})]
    return set(seqs), len(seqs) - len(set(seqs))


def test_a_full_spool_drops_samples_first_and_loses_no_window_or_event_across_an_outage_and_a_restart(
    tmp_path: Path, database_url: str
) -> None:
    broker = MosquittoBroker(tmp_path / "broker", persistence=True).start()
    cloud = CloudService(CloudSettings(data_dir=tmp_path / "cloud", mqtt_url=broker.url, database_url=database_url,
                                       api_port=0, mqtt_reconnect_max_s=1.0)).start()  # fmt: skip
    fleet: SimulatedFleet | None = None
    agent: Agent | None = None
    try:
        assert cloud.engine is not None and cloud.store is not None and cloud.deployer is not None
        v1 = run_training_pipeline(cloud.engine, cloud.store, cloud.signer, TrainingConfig(model_id="pq"))
        log = WindowLog()
        events: set[int] = set()
        transports: list[RecordingTransport] = []

        def factory(settings: AgentSettings) -> RecordingTransport:
            inner = transport_for(settings, reconnect_min_s=0.2, reconnect_max_s=1.0, spool_max_messages=SPOOL_BOUND)
            transports.append(EventNoting(inner, settings.device_id, log, events))
            return transports[-1]

        fleet = SimulatedFleet([DEVICE], mqtt_url=broker.url, trust_path=cloud.trust_chain_path,
                               state_root=tmp_path / "devices", passwords=enroll(cloud, DEVICE),
                               telemetry_interval_s=0.5, sample_rate=1.0, transport_factory=factory,
                               # every row sampled: more than the spool holds (no daily budget in the way)
                               settings_overrides={"sample_bytes_per_day": 10**9})  # fmt: skip
        fleet.start()
        device = fleet.devices[DEVICE]
        agent = device.agent
        cloud.deployer.deploy(DeploymentCreate(model_id="pq", version=v1.version, device_ids=[DEVICE]))
        assert fleet.wait_all(lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE, 60) == []
        row = np.zeros((1, agent.serving.n_features if agent.serving else 64), dtype=np.float32)

        def serve(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                assert agent is not None
                agent.predict(row)
                time.sleep(0.05)

        serve(1.0)
        broker.stop()
        serve(OUTAGE_S / 2)
        agent.stop()  # mid-outage: what it had not delivered stays in the spool file
        agent = Agent(device.settings, factory(device.settings))
        device.agent = agent
        agent.start()
        serve(OUTAGE_S / 2)
        broker.start()
        assert agent.transport.wait_connected(15)
        serve(1.0)

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            windows, repeated_windows = stored(cloud, "telemetryrecord")
            stored_events, repeated_events = stored(cloud, "eventrecord")
            sent = log.seqs().get(DEVICE, set())
            if sent <= windows and events <= stored_events:
                break
            time.sleep(0.5)
        assert sent - windows == set() and repeated_windows == 0
        assert events - stored_events == set() and repeated_events == 0
        assert len(events) >= 3  # started (twice) and activated, at least
        drops = transports[-1].inner.spool_drops()
        assert drops["samples"] > 0 and drops["telemetry"] == 0 and drops["events"] == 0, drops
        window = agent.flush_telemetry()
        assert window is not None and window.spool_dropped.samples == drops["samples"]
    finally:
        if agent is not None:
            agent.stop()
        cloud.stop()
        broker.stop()


class EventNoting(RecordingTransport):
    """Also notes the seq of every lifecycle event on its way in."""

    def __init__(self, inner: object, device_id: str, log: WindowLog, events: set[int]) -> None:
        super().__init__(inner, device_id, log)  # type: ignore[arg-type]
        self.events = events

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if topic.endswith("/events"):
            self.events.add(pb.LifecycleEvent.FromString(payload).seq)
        super().publish(topic, payload, qos, retain)
