"""Simulated devices: a fleet of them in one process, each running the real `edge_agent.Agent`.

(Named `devices`, not `fleet`, so it does not read as the cloud's fleet registry.)

Every device has its own settings, state directory, MQTT connection and data stream, exactly as a real
device would; only the data it infers on is synthetic. A cloud ignores devices it has not enrolled, so
enroll them first (`cloud.identity.enrollment.enroll_device`, or `edgefleet devices enroll` and a token)
and pass each one's broker password in `passwords`: the device id is its user name.

`SimulatedFleet` gives each agent its own threads and paho client: fine for tens of devices (paho's
select() fails past file descriptor 1024). `simulator.host.AgentHost` runs thousands on one event loop;
both offer the `DeviceGroup` operations below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from edge_agent.agent import Agent
from edge_agent.config import AgentSettings, Secret
from edge_agent.transport import Transport
from protocols.v1 import messages_pb2 as pb
from simulator.data import DataStream

TransportFactory = Callable[[AgentSettings], Transport]


@dataclass
class DeviceRun:
    """What one device did in `run_inference`."""

    device_id: str
    inferences: int
    errors: int
    correct: int


@dataclass
class SimulatedDevice:
    settings: AgentSettings
    agent: Agent
    stream: DataStream | None = None


def default_transport(settings: AgentSettings) -> Transport:
    from edge_agent.connect import transport_for

    return transport_for(settings)


class DeviceGroup:
    """What every simulated fleet offers over its `devices`: waiting on reported states, inference on
    attached data streams, and telemetry flushes."""

    devices: dict[str, SimulatedDevice]

    def attach_streams(self, streams: dict[str, DataStream]) -> None:
        for device_id, stream in streams.items():
            self.devices[device_id].stream = stream

    def wait_all(self, predicate: Callable[[pb.ReportedState], bool], timeout_s: float) -> list[str]:
        """Wait until every device's reported state satisfies predicate; return the ids that never did."""
        deadline = time.monotonic() + timeout_s
        pending = []
        for device_id, device in self.devices.items():
            if not device.agent.wait_for(predicate, max(0.0, deadline - time.monotonic())):
                pending.append(device_id)
        return pending

    def count(self, predicate: Callable[[pb.ReportedState], bool]) -> int:
        """How many devices' reported state satisfies predicate now."""
        return sum(1 for device in self.devices.values() if device.agent.read_status(predicate))

    def run_inference(self, per_device: int, *, parallel: int = 1, labelled: bool = True) -> list[DeviceRun]:
        """Each device infers on `per_device` rows of its stream, one row per call, with the true label
        (`labelled=False`: without it, as a real device that learns the truth only later, if at all).

        Devices take turns by default: real devices each have their own CPU, while simulated ones share
        this machine's, so running them at once would make each device's latency figures mostly measure
        the wait for the interpreter lock. `parallel` > 1 is for load tests."""
        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(self.devices))), thread_name_prefix="sim") as pool:
            return list(pool.map(lambda d: _infer(d, per_device, labelled), self.devices.values()))

    def flush_telemetry(self) -> int:
        return sum(1 for d in self.devices.values() if d.agent.flush_telemetry() is not None)


class SimulatedFleet(DeviceGroup):
    def __init__(
        self,
        device_ids: Sequence[str],
        *,
        mqtt_url: str,
        trust_path: Path,
        state_root: Path,
        labels: Callable[[str], dict[str, str]] = lambda _id: {},
        passwords: Mapping[str, str] | None = None,
        mqtt_protocol: Literal["5", "3.1.1"] = "3.1.1",
        telemetry_interval_s: float = 3600.0,
        sample_rate: float = 0.05,
        transport_factory: TransportFactory = default_transport,
        settings_overrides: dict[str, object] | None = None,
    ) -> None:
        self.devices: dict[str, SimulatedDevice] = {}
        overrides = dict(settings_overrides or {})
        for device_id in device_ids:
            password = (passwords or {}).get(device_id)
            settings = AgentSettings(
                device_id=device_id,
                mqtt_url=mqtt_url,
                mqtt_username=device_id if password is not None else None,
                mqtt_password=Secret(password) if password is not None else None,
                mqtt_protocol=mqtt_protocol,
                trust_path=trust_path,  # the TrustChain file the agent pins (edge_agent.AgentSettings)
                state_dir=state_root / device_id,
                grpc_address="",
                telemetry_interval_s=telemetry_interval_s,
                sample_rate=sample_rate,
                labels=labels(device_id),
                isolate_loads=False,  # one process simulates the fleet: no child process per device and update
                **overrides,  # type: ignore[arg-type]
            )
            self.devices[device_id] = SimulatedDevice(settings, Agent(settings, transport_factory(settings)))

    def __enter__(self) -> SimulatedFleet:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for device in self.devices.values():
            device.agent.start()

    def stop(self) -> None:
        for device in self.devices.values():
            device.agent.stop()


def _infer(device: SimulatedDevice, n: int, labelled: bool = True) -> DeviceRun:
    if device.stream is None:
        raise ValueError(f"device {device.settings.device_id} has no data stream")
    errors = correct = 0
    for x, label in device.stream.rows(n):
        try:
            prediction = device.agent.predict(np.asarray(x, dtype=np.float32), label=str(label) if labelled else None)
        except Exception:  # an inference error is counted by the agent's telemetry and here
            errors += 1
            continue
        if prediction.labels and prediction.labels[0] == str(label):
            correct += 1
    return DeviceRun(device.settings.device_id, n, errors, correct)
