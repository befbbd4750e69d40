"""Devices that act as real agents would towards the cloud's database, without MQTT: they install what
they are assigned (reading the retained desired state off a MemoryBroker), report it, and send telemetry
windows for the model they run, with a chosen share of failed inferences or labels. For rollout and
experiment tests that need the fleet's own telemetry on a clock the test moves."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from cloud.monitoring import Ingestor
from edge_agent.transport import MemoryBroker
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb


class Clock:
    def __init__(self) -> None:
        self.ms = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.ms


def version_of(state: pb.DesiredState) -> str:
    return pb.Manifest.FromString(state.manifest.manifest).version


class TelemetryFleet:
    """Devices that do what real agents would: install what they are assigned, report it, send windows."""

    def __init__(self, engine: Engine, broker: MemoryBroker, clock: Clock, device_ids: Sequence[str]) -> None:
        self.engine, self.broker, self.clock, self.device_ids = engine, broker, clock, list(device_ids)
        self.seq: dict[str, int] = {}
        self.error_share: dict[str, float] = {}  # version -> share of inferences that fail
        self.accuracy: dict[str, float] = {}  # version -> share of labelled inferences that are right
        self.active: dict[str, str] = {}  # device -> the version it runs (what its agent would know)
        self.previous: dict[str, str] = {}  # device -> the version it ran before that (reported, as agents do)

    def _send(self, device_id: str, channel: Channel, message: object) -> None:
        Ingestor(self.engine).process([(device_topic(device_id, channel), message.SerializeToString())])  # type: ignore[attr-defined]

    def _next(self, device_id: str) -> int:
        self.seq[device_id] = self.seq.get(device_id, 0) + 1
        return self.seq[device_id]

    def desired(self, device_id: str) -> pb.DesiredState | None:
        found = self.broker.retained_for(device_topic(device_id, Channel.DESIRED))
        return pb.DesiredState.FromString(found[0][1]) if found else None

    def install(self, device_id: str, version: str) -> None:
        """The device activates `version` (the previous one stays its `previous`), reporting nothing yet."""
        if self.active.get(device_id) != version:
            if device_id in self.active:
                self.previous[device_id] = self.active[device_id]
            self.active[device_id] = version

    def running(self, device_id: str, version: str, deployment_id: str = "", generation: int = 0) -> None:
        """The device runs `version` and says so (with the model it ran before, as agents report it)."""
        self.install(device_id, version)
        previous = self.previous.get(device_id)
        self._send(device_id, Channel.REPORTED, pb.ReportedState(
            schema_version=1, device_id=device_id, seq=self._next(device_id), ts_ms=self.clock.ms,
            active_model=pb.ModelRef(model_id="m", version=version, sequence=int(version)),
            previous_model=pb.ModelRef(model_id="m", version=previous, sequence=int(previous)) if previous else None,
            update_state=pb.UPDATE_STATE_ACTIVE, deployment_id=deployment_id, desired_generation=generation,
            runtimes=["onnxruntime"], agent_version="0.4.0",
        ))  # fmt: skip

    def window(self, device_id: str, version: str, inferences: int = 100, shadow: tuple[int, int] = (0, 0)) -> None:
        errors = int(inferences * self.error_share.get(version, 0.0))
        labelled = inferences - errors  # every answer's true label is learned (a feedback loop)
        correct = round(labelled * self.accuracy.get(version, 0.9))
        self._send(device_id, Channel.TELEMETRY, pb.TelemetryWindow(
            schema_version=1, device_id=device_id, seq=self._next(device_id),
            window_start_ms=self.clock.ms - 1000, window_end_ms=self.clock.ms,
            model=pb.ModelRef(model_id="m", version=version, sequence=int(version)),
            inference_count=inferences - errors, error_count=errors, labelled_count=labelled, correct_count=correct,
            latency_us=pb.Histogram(bounds=[100, 200], counts=[inferences - errors, 0, 0]),
            predictions=pb.PredictionProfile(labels=["a", "b"], counts=[(inferences - errors) // 2,
                                                                        (inferences - errors + 1) // 2]),
            shadow_compared=shadow[0], shadow_agreed=shadow[1],
        ))  # fmt: skip

    def live(self) -> None:
        """Every device installs its desired model if it has one, then reports a window of what it runs."""
        for device_id in self.device_ids:
            state = self.desired(device_id)
            version = version_of(state) if state else "1"
            if state is not None:
                self.running(device_id, version, state.deployment_id, state.generation)
            self.window(device_id, version)




def fleet_on_v1(
    engine: Engine, register: Any, director: Any, devices: Sequence[str]
) -> tuple[Any, TelemetryFleet, Clock]:
    """Model "m" registered at versions 1 and 2, `devices` enrolled and running 1 with ten minutes of
    telemetry on it (the baseline a rollout of 2 is judged against). Returns (deployer, fleet, clock)."""
    from sqlmodel import Session

    from cloud.rollout import Deployer
    from edge_agent.transport import MemoryTransport
    from support.enrollment import enroll

    clock = Clock()
    transport = MemoryTransport(broker := MemoryBroker())
    transport.start()
    deployer = Deployer(engine, transport, director=director, chunk_size_bytes=1024, clock=clock)
    with Session(engine) as session:
        register(session, "m")
        register(session, "m")
    enroll(engine, *devices)
    fleet = TelemetryFleet(engine, broker, clock, devices)
    clock.ms -= 600_000  # ten minutes on v1 before the rollout: the baseline
    for device_id in devices:
        fleet.running(device_id, "1")
        fleet.window(device_id, "1")
    clock.ms += 600_000
    return deployer, fleet, clock
