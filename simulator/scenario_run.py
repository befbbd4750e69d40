"""Run a `Scenario`: a cloud (embedded parts unless told otherwise), a model trained and registered as the
demo does, the scenario's devices on an `AgentHost` (real agents, hardware facts per group), each fed its
own data stream, and the timeline of deploys, drift and faults played out, then a report.

Time on the timeline is wall time from the start of the run (after training and enrollment). The
progress callback hears one line a second; the report says per group how many devices run the deployed
version, how many failed and why, what they inferred and how well, and which faults hit them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import NoModelError
from protocols.v1 import messages_pb2 as pb
from simulator.data import DataStream
from simulator.data import Drift as DriftShape
from simulator.host import AgentHost, DeviceSpec
from simulator.scenario import BrokerRestart, Crash, Deploy, Disconnect, Drift, Scenario, ScenarioError

__all__ = ["DeviceOutcome", "GroupReport", "RunReport", "run_scenario"]

MODEL_ID = "scenario-model"
STEP_S = 0.05
DRAIN_TIMEOUT_S = 20.0  # after the timeline: how long deploys still under way may take to finish


@dataclass
class DeviceOutcome:
    device_id: str
    group: str
    state: str  # the update state it last reported, lower case
    version: str  # the version it runs ("" for none)
    error: str = ""  # "code: message" of its last error
    inferences: int = 0
    errors: int = 0
    correct: int = 0
    disconnects: int = 0
    crashes: int = 0


@dataclass
class GroupReport:
    name: str
    devices: int
    running_deployed: int  # devices running the version deployed to them
    failed: int
    inferences: int
    errors: int
    accuracy: float | None
    disconnects: int
    crashes: int
    drifted: bool


@dataclass
class RunReport:
    scenario: str
    devices: int
    version: str
    duration_s: float
    rollout_s: float | None  # first deploy until every device it targeted runs the version (None: never)
    groups: list[GroupReport]
    failures: dict[str, str]  # device -> reason, for devices that did not end on the deployed version
    timeline: list[tuple[float, str]] = field(default_factory=list)
    devices_detail: list[DeviceOutcome] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_scenario(
    scenario: Scenario,
    *,
    data_dir: Path,
    mqtt_url: str | None = None,
    database_url: str | None = None,
    progress: Callable[[str], None] = lambda _line: None,
) -> RunReport:
    from cloud.db.tables import DeploymentCreate
    from cloud.identity.enrollment import enroll_device
    from cloud.service import CloudService
    from cloud.settings import CloudSettings
    from cloud.training.pipeline import TrainingConfig, run_training_pipeline

    if mqtt_url is not None and any(isinstance(e, BrokerRestart) for e in scenario.events):
        raise ScenarioError("broker_restart needs the embedded broker: run without --mqtt-url")
    overrides: dict[str, Any] = {"data_dir": data_dir, "api_port": 0, "mqtt_url": mqtt_url,
                                 "database_url": database_url}  # fmt: skip
    settings = CloudSettings(**{k: v for k, v in overrides.items() if v is not None})
    with CloudService(settings) as cloud:
        assert cloud.engine is not None and cloud.store is not None and cloud.deployer is not None
        progress(f"cloud up (broker {cloud.mqtt_url}); training {scenario.model.estimator} on {scenario.model.dataset}")
        trained = run_training_pipeline(cloud.engine, cloud.store, cloud.signer,
                                        TrainingConfig(model_id=MODEL_ID, estimator=scenario.model.estimator,
                                                       seed=scenario.scenario.seed))  # fmt: skip
        group_of = {d: g.name for g in scenario.groups for d in g.device_ids()}
        specs = []
        with cloud.session() as session:
            for group in scenario.groups:
                labels = {"group": group.name, **group.labels}
                facts = group.hardware.facts() if group.hardware is not None else None
                for device_id in group.device_ids():
                    password = enroll_device(session, device_id, labels).password
                    specs.append(DeviceSpec(device_id, labels, password, facts))
        progress(f"model v{trained.version} registered; starting {len(specs)} devices")
        host = AgentHost(specs, mqtt_url=cloud.mqtt_url or "", mqtt_protocol="3.1.1",
                         trust_path=cloud.trust_chain_path, state_root=data_dir / "devices",
                         telemetry_interval_s=scenario.scenario.telemetry_interval_s)  # fmt: skip
        with host:
            play = _Timeline(scenario, host, trained, group_of, progress)
            play.deploy = lambda ids: cloud.deployer.deploy(  # type: ignore[union-attr]
                DeploymentCreate(model_id=MODEL_ID, version=trained.version, device_ids=ids))
            play.restart_broker = lambda: cloud.broker.restart()
            play.run()
            host.flush_telemetry()
            return play.report()


class _Timeline:
    def __init__(self, scenario: Scenario, host: AgentHost, trained: Any, group_of: dict[str, str],
                 progress: Callable[[str], None]) -> None:  # fmt: skip
        self.scenario, self.host, self.trained = scenario, host, trained
        self.group_of, self.progress = group_of, progress
        self.deploy: Callable[[list[str]], Any] = lambda _ids: None
        self.restart_broker: Callable[[], Any] = lambda: None
        self.rng = random.Random(scenario.scenario.seed)
        split = trained.split
        self.top_features = [int(i) for i in np.argsort(-split.X_train.std(axis=0))]
        self.streams = {}
        for n, device_id in enumerate(sorted(group_of)):
            group = scenario.group(group_of[device_id])
            self.streams[device_id] = DataStream(split.X_test, split.y_test, seed=scenario.scenario.seed * 100_003 + n,
                                                 noise=group.data.noise)  # fmt: skip
        self.outcomes = {d: DeviceOutcome(d, g, "", "") for d, g in group_of.items()}
        self.due = dict.fromkeys(group_of, 0.0)
        self.drifts: list[tuple[float, Drift]] = []
        self.crashed: dict[str, float] = {}  # device -> when to restart it
        self.targeted: set[str] = set()
        self.first_deploy_s: float | None = None
        self.rollout_s: float | None = None
        self.log: list[tuple[float, str]] = []

    def run(self) -> None:
        events = sorted(self.scenario.events, key=lambda e: e.at_s)
        start = time.monotonic()
        next_progress = 0.0
        last = 0.0
        while True:
            now = time.monotonic() - start
            while events and events[0].at_s <= now:
                self._fire(events.pop(0), now)
            for device_id, when in list(self.crashed.items()):
                if when <= now:
                    del self.crashed[device_id]
                    self.host.restart(device_id)
                    self._note(now, f"restarted {device_id}")
            self._apply_drift(now)
            self._infer(now - last)
            last = now
            self._check_rollout(now)
            if now >= next_progress:
                next_progress = now + 1.0
                self.progress(self._progress_line(now))
            end = self.scenario.scenario.duration_s
            settled = self.rollout_s is not None or not self.targeted or now >= end + DRAIN_TIMEOUT_S
            if now >= end and settled:  # past the end, a rollout still under way gets DRAIN_TIMEOUT_S more
                break
            time.sleep(STEP_S)

    def _fire(self, event: Any, now: float) -> None:
        devices = self.scenario.devices_of(event.group)
        where = event.group or "all"
        if isinstance(event, Deploy):
            self.deploy(devices)
            self.targeted |= set(devices)
            if self.first_deploy_s is None:
                self.first_deploy_s = now
            self.rollout_s = None
            self._note(now, f"deploy v{self.trained.version} to {where} ({len(devices)} devices)")
        elif isinstance(event, Drift):
            self.drifts.append((now, event))
            self._note(now, f"{event.kind} drift on {where}: shift {event.shift:g}, scale {event.scale:g}")
        elif isinstance(event, Disconnect):
            for device_id in self.rng.sample(devices, event.devices):
                self.host.disconnect(device_id, event.offline_s)
                self.outcomes[device_id].disconnects += 1
                self._note(now, f"disconnected {device_id} for {event.offline_s:g}s")
        elif isinstance(event, Crash):
            for device_id in self.rng.sample([d for d in devices if d not in self.crashed], event.devices):
                self.host.crash(device_id)
                self.crashed[device_id] = now + event.restart_after_s
                self.outcomes[device_id].crashes += 1
                self._note(now, f"crashed {device_id}")
        elif isinstance(event, BrokerRestart):
            self.restart_broker()
            self._note(now, "broker restarted")

    def _apply_drift(self, now: float) -> None:
        shapes: dict[str, DriftShape] = {}
        for began, drift in self.drifts:
            strength = drift.strength(now - began)
            features = tuple(drift.features or self.top_features[: drift.top])
            shape = DriftShape(features, shift=drift.shift * strength, scale=1.0 + (drift.scale - 1.0) * strength)
            for device_id in self.scenario.devices_of(drift.group):
                shapes[device_id] = shape  # a later drift on the same device replaces an earlier one
        for device_id, stream in self.streams.items():
            stream.drift = shapes.get(device_id, DriftShape())

    def _infer(self, elapsed_s: float) -> None:
        for device_id, stream in self.streams.items():
            if device_id in self.crashed:
                continue
            rate = self.scenario.group(self.group_of[device_id]).data.rate_hz
            self.due[device_id] += rate * elapsed_s
            n = int(self.due[device_id])
            if n <= 0:
                continue
            self.due[device_id] -= n
            agent = self.host.devices[device_id].agent
            outcome = self.outcomes[device_id]
            for x, label in stream.rows(n):
                try:
                    prediction = agent.predict(x, label=str(label))
                except NoModelError:
                    continue  # nothing deployed yet: a real caller would get the same refusal
                except Exception:  # noqa: BLE001 - the agent counted it in its telemetry too
                    outcome.errors += 1
                    continue
                outcome.inferences += 1
                outcome.correct += bool(prediction.labels and prediction.labels[0] == str(label))

    def _check_rollout(self, now: float) -> None:
        if self.rollout_s is not None or not self.targeted or self.first_deploy_s is None:
            return
        if all(self._runs(d) for d in self.targeted):
            self.rollout_s = now - self.first_deploy_s
            self._note(now, f"every targeted device runs v{self.trained.version}")

    def _runs(self, device_id: str) -> bool:
        state = self.host.devices[device_id].agent.status()
        return state.update_state == pb.UPDATE_STATE_ACTIVE and state.active_model.version == self.trained.version

    def _progress_line(self, now: float) -> str:
        running = sum(1 for d in self.outcomes if self._runs(d))
        inferences = sum(o.inferences for o in self.outcomes.values())
        offline = sum(1 for t in self.host.transports.values() if not t.connected)
        return (f"t={now:5.1f}s/{self.scenario.scenario.duration_s:g}s  running v{self.trained.version}: "
                f"{running}/{len(self.outcomes)}  offline: {offline}  crashed: {len(self.crashed)}  "
                f"inferences: {inferences}")  # fmt: skip

    def _note(self, now: float, what: str) -> None:
        self.log.append((round(now, 2), what))

    def report(self) -> RunReport:
        failures = {}
        for device_id, outcome in self.outcomes.items():
            state = self.host.devices[device_id].agent.status()
            outcome.state = pb.UpdateState.Name(state.update_state).removeprefix("UPDATE_STATE_").lower()
            outcome.version = state.active_model.version
            if state.HasField("last_error"):
                outcome.error = f"{state.last_error.code}: {state.last_error.message}"
            if device_id in self.targeted and not self._runs(device_id):
                failures[device_id] = outcome.error or f"still {outcome.state}"
        drifted = {d for _t, e in self.drifts for d in self.scenario.devices_of(e.group)}
        groups = []
        for group in self.scenario.groups:
            members = [self.outcomes[d] for d in group.device_ids()]
            inferences = sum(o.inferences for o in members)
            groups.append(GroupReport(
                name=group.name, devices=len(members),
                running_deployed=sum(1 for o in members if self._runs(o.device_id)),
                failed=sum(1 for o in members if o.device_id in failures),
                inferences=inferences, errors=sum(o.errors for o in members),
                accuracy=round(sum(o.correct for o in members) / inferences, 4) if inferences else None,
                disconnects=sum(o.disconnects for o in members), crashes=sum(o.crashes for o in members),
                drifted=any(o.device_id in drifted for o in members),
            ))  # fmt: skip
        return RunReport(
            scenario=self.scenario.scenario.name, devices=len(self.outcomes), version=self.trained.version,
            duration_s=self.scenario.scenario.duration_s,
            rollout_s=None if self.rollout_s is None else round(self.rollout_s, 2),
            groups=groups, failures=failures, timeline=self.log, devices_detail=list(self.outcomes.values()),
        )  # fmt: skip
