"""Run a `Scenario`: a cloud (embedded parts unless told otherwise), a model trained and registered as the
demo does, the scenario's devices on an `AgentHost` (real agents, hardware facts per group), each fed its
own data stream, and the timeline of deploys, drift and faults played out, then a report.

Time on the timeline is wall time from the start of the run (after training and enrollment). The
progress callback hears one line a second; the report says per group how many devices run the deployed
version, how many failed and why, what they inferred and how well, and which faults hit them.

Network profiles put a shaping proxy (simulator.netem) between the devices and the broker; faults inside a
device (disk full, clock skew) go through simulator.faults. Every targeted device's update ends one of
three ways, and the report says which per group and per network profile: updated (with the time from its
deploy to running the version: p50/p95), failed (the agent's reported error, or the error event it sent
last: a refusal changes no state), or still under way when the drain time ran out, with why: its link was
down (`link_down`: offline at the end, or back for less than LINK_GRACE_S), its agent was down (`crashed`),
or neither (`stalled`: the link allowed and the update neither completed nor failed). "Every update
completes when its device's link allows, or fails with a reported reason" is `stalled == 0` in the report.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.config import AgentSettings
from edge_agent.errors import NoModelError
from edge_agent.transport import TransportError
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb
from simulator.broker import BrokerError, OwnedMosquitto
from simulator.data import DataStream
from simulator.data import Drift as DriftShape
from simulator.faults import FaultHooks
from simulator.host import AgentHost, DeviceSpec
from simulator.labels import DelayedLabels
from simulator.netem import NetworkProfile, NetworkShaper
from simulator.scenario import (
    BrokerRestart,
    ClockSkew,
    Corrupt,
    Crash,
    Deploy,
    Disconnect,
    DiskFull,
    Drift,
    LabelShift,
    Scenario,
    ScenarioError,
    ScenarioInfo,
)

__all__ = ["DeviceOutcome", "GroupReport", "RunReport", "run_scenario"]

MODEL_ID = "scenario-model"
STEP_S = 0.05
DRAIN_TIMEOUT_S = 20.0  # after the timeline: how long deploys still under way may take to finish
# devices whose update is looked at per step (a status() copy each): all of them in a small fleet, a
# rotating slice of a large one, so time to update is exact to a step up to this many devices under way
CHECKS_PER_STEP = 500
INGEST_WAIT_S = 15.0  # after the run: how long the cloud may take to store the last samples and labels
# a device whose link came back less than this before the end had no fair chance to finish: the agent asks
# again for chunks that do not come within its chunk timeout (10 s), so give it that and a margin
LINK_GRACE_S = 15.0


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
    network: str = ""  # its profile's name ("" when not shaped)
    outcome: str = ""  # of its update: updated | failed | pending ("" when no deploy targeted it)
    # for failed and pending: "code: why" (pending: link_down | crashed | stalled, see the module doc)
    reason: str = ""
    update_s: float | None = None  # deploy to running the version
    link_drops: int = 0  # the profile's random drops (Poisson) and connections TCP gave up on
    link_stalls: int = 0  # retransmission stalls
    corrupted_chunks: int = 0


@dataclass
class UpdateSummary:
    """How the updates of some devices ended."""

    targeted: int = 0
    updated: int = 0
    failed: int = 0
    pending: int = 0  # still under way when the drain time ran out
    stalled: int = 0  # of those, with the link up and the agent running: nothing explains them (a defect)
    update_p50_s: float | None = None
    update_p95_s: float | None = None
    reasons: dict[str, int] = field(default_factory=dict)  # reason code -> devices (failed and pending)


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
    network: str = ""
    updates: UpdateSummary = field(default_factory=UpdateSummary)
    link_drops: int = 0
    link_stalls: int = 0
    corrupted_chunks: int = 0


@dataclass
class AccuracyWindow:
    """The cloud's field accuracy (sampled predictions with a label) of predictions made in one window."""

    start_s: float  # from the start of the timeline
    labelled: int
    accuracy: float | None
    low: float | None  # 95 % interval
    high: float | None


@dataclass
class LabelFlow:
    """Delayed labels: how many sampled predictions were seen, labelled, delivered, still owed at the end."""

    sampled: int = 0
    queued: int = 0
    delivered: int = 0
    owed: int = 0
    stored_by_cloud: int = 0


@dataclass
class RunReport:
    scenario: str
    devices: int
    version: str
    duration_s: float
    rollout_s: float | None  # first deploy until every device it targeted runs the version (None: never)
    groups: list[GroupReport]
    failures: dict[str, str]  # device -> reason, for devices that did not end on the deployed version
    updates: UpdateSummary = field(default_factory=UpdateSummary)  # every targeted device's
    networks: dict[str, UpdateSummary] = field(default_factory=dict)  # per network profile
    accuracy_windows: list[AccuracyWindow] = field(default_factory=list)
    labels: LabelFlow = field(default_factory=LabelFlow)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    events_late_s: float = 0.0  # the most any timeline event fired after its at_s
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
    restarts = any(isinstance(e, BrokerRestart) for e in scenario.events)
    if scenario.scenario.broker == "mosquitto":
        if mqtt_url is not None:
            raise ScenarioError('broker = "mosquitto" starts a broker of its own: run without --mqtt-url')
        try:
            owned = OwnedMosquitto(data_dir / "mosquitto")
            owned.start()
        except BrokerError as exc:
            raise ScenarioError(str(exc)) from None
        try:
            return _run(scenario, data_dir, owned.url, database_url, progress, owned)
        finally:
            owned.stop()
    if mqtt_url is not None and restarts:
        raise ScenarioError('broker_restart needs a broker the scenario owns: run without --mqtt-url (the embedded '
                            'one) or with broker = "mosquitto"')  # fmt: skip
    return _run(scenario, data_dir, mqtt_url, database_url, progress, None)


def _run(scenario: Scenario, data_dir: Path, mqtt_url: str | None, database_url: str | None,
         progress: Callable[[str], None], owned: OwnedMosquitto | None) -> RunReport:  # fmt: skip
    from cloud.db.tables import DeploymentCreate
    from cloud.identity.enrollment import enroll_device
    from cloud.service import CloudService
    from cloud.settings import CloudSettings
    from cloud.training.pipeline import TrainingConfig, run_training_pipeline

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
        shaper = _shaper(scenario, group_of, cloud.mqtt_url or "") if scenario.shaped else None
        try:
            if shaper is not None:
                progress(f"network profiles: devices connect through the shaping proxy at {shaper.start()}")
            hooks = FaultHooks()
            data = {d: scenario.group(g).data for d, g in group_of.items()}
            delayed = {d: spec for d, spec in data.items() if spec.label_delay_s is not None}
            late_labels = DelayedLabels(
                {d: spec.label_delay_s or 0.0 for d, spec in delayed.items()},
                {d: spec.labelled for d, spec in delayed.items()},
                seed=scenario.scenario.seed,
            )
            if delayed:
                hooks.on_samples = late_labels.sampled
            specs = []
            with cloud.session() as session:
                for group in scenario.groups:
                    labels = {"group": group.name, **group.labels}
                    facts = group.hardware.facts() if group.hardware is not None else None
                    for device_id in group.device_ids():
                        password = enroll_device(session, device_id, labels).password
                        url = shaper.url if shaper is not None else None
                        specs.append(DeviceSpec(device_id, labels, password, facts, url))
            progress(f"model v{trained.version} registered; starting {len(specs)} devices")
            host = AgentHost(specs, mqtt_url=cloud.mqtt_url or "", mqtt_protocol="3.1.1",
                             trust_path=cloud.trust_chain_path, state_root=data_dir / "devices",
                             telemetry_interval_s=scenario.scenario.telemetry_interval_s, hooks=hooks,
                             sample_rate=scenario.scenario.sample_rate,
                             settings_overrides={"sample_bytes_per_day": sample_budget(scenario.scenario)})  # fmt: skip
            with host:
                play = _Timeline(scenario, host, trained, group_of, progress, hooks, shaper, late_labels)
                play.deploy = lambda ids: cloud.deployer.deploy(  # type: ignore[union-attr]
                    DeploymentCreate(model_id=MODEL_ID, version=trained.version, device_ids=ids)
                )
                play.restart_broker = owned.restart if owned is not None else lambda: cloud.broker.restart()
                play.run()
                host.flush_telemetry()
                play.send_labels()
                report = play.report()
            report.accuracy_windows, report.labels.stored_by_cloud = _field_accuracy(cloud, scenario, play)
            return report
        finally:
            if shaper is not None:
                shaper.stop()


def _field_accuracy(cloud: Any, scenario: Scenario, play: _Timeline) -> tuple[list[AccuracyWindow], int]:
    """What the cloud makes of the samples and labels, once it has stored what the devices sent."""
    from sqlalchemy import func
    from sqlmodel import select

    from cloud.db.tables import FeedbackRecord, SampleRecord
    from cloud.monitoring.feedback import field_accuracy

    def counts() -> tuple[int, int]:
        with cloud.session() as session:
            samples = session.exec(select(func.count()).select_from(SampleRecord)).one()
            labels = session.exec(select(func.count()).select_from(FeedbackRecord)).one()
        return int(samples), int(labels)

    deadline, last, stable_since = time.monotonic() + INGEST_WAIT_S, (-1, -1), time.monotonic()
    while time.monotonic() < deadline:  # ingestion is asynchronous: wait until the counts stop moving
        now_counts = counts()
        if now_counts != last:
            last, stable_since = now_counts, time.monotonic()
        elif now_counts[1] >= play.labels_sent and time.monotonic() - stable_since >= 1.0:
            break
        time.sleep(0.2)
    window_ms = int(scenario.scenario.accuracy_window_s * 1000)
    with cloud.session() as session:
        lines = field_accuracy(session, MODEL_ID, by="window", window_ms=window_ms, since_ms=play.start_wall_ms)
    windows = [AccuracyWindow(round((int(line.key) - play.start_wall_ms) / 1000, 1), line.labelled,
                              None if line.accuracy is None else round(line.accuracy, 4),
                              None if line.low is None else round(line.low, 4),
                              None if line.high is None else round(line.high, 4)) for line in lines]  # fmt: skip
    return windows, last[1]


def _shaper(scenario: Scenario, group_of: dict[str, str], broker_url: str) -> NetworkShaper:
    """The proxy every device connects through, each shaped by its group's profile (unshaped: none)."""
    unshaped = NetworkProfile()

    def profile_of(device_id: str) -> NetworkProfile:
        network = scenario.group(group_of[device_id]).network if device_id in group_of else None
        return scenario.profile(network) if network else unshaped

    return NetworkShaper(broker_url, profile_of, seed=scenario.scenario.seed)


class _Timeline:
    def __init__(self, scenario: Scenario, host: AgentHost, trained: Any, group_of: dict[str, str],
                 progress: Callable[[str], None], hooks: FaultHooks | None = None,
                 shaper: NetworkShaper | None = None, labels: DelayedLabels | None = None) -> None:  # fmt: skip
        self.scenario, self.host, self.trained = scenario, host, trained
        self.group_of, self.progress = group_of, progress
        self.hooks, self.shaper = hooks or FaultHooks(), shaper
        self.labels = labels or DelayedLabels({}, {})
        self.label_shifts: list[tuple[float, LabelShift]] = []
        self.labels_sent = 0
        self.fleet = host.trust.fleet if host.trust is not None else ""
        self.start_wall_ms = int(time.time() * 1000)
        self.deployed_at: dict[str, float] = {}  # device -> when its (latest) deploy was sent
        self.updated_at: dict[str, float] = {}  # device -> when it first ran the version after that
        self.refill: dict[str, float] = {}  # device -> when its full disk frees up
        self.failed: dict[str, str] = {}  # device -> why its update failed, as last looked at
        self._to_check: list[str] = []  # the rest of the current round of checks
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
        self.outcomes = {d: DeviceOutcome(d, g, "", "", network=scenario.group(g).network or "")
                         for d, g in group_of.items()}  # fmt: skip
        self.due = dict.fromkeys(group_of, 0.0)
        self.drifts: list[tuple[float, Drift]] = []
        self.crashed: dict[str, float] = {}  # device -> when to restart it
        self.link_up_since: dict[str, float] = {}  # device under way -> when its link was last seen come up
        self.ended_s = 0.0
        self.targeted: set[str] = set()
        self.first_deploy_s: float | None = None
        self.rollout_s: float | None = None
        self.log: list[tuple[float, str]] = []
        self.events_late_s = 0.0
        # deploys run here, one at a time and in order: a deploy to a large fleet takes seconds (planning,
        # commit, a publish per device), and on the timeline's own thread it held back every fault after it
        self._deploys: list[tuple[float, str, Future[Any]]] = []  # (fired at, where, its deploy)

    def run(self) -> None:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scenario-deploy") as self._deployer:
            self._run()
            # under way past the drain time: wait for it, so the cloud it uses is not shut under it
            for _fired, _where, future in self._deploys:
                future.result()

    def _run(self) -> None:
        events = sorted(self.scenario.events, key=lambda e: e.at_s)
        start = time.monotonic()
        self.start_wall_ms = int(time.time() * 1000)
        next_progress = 0.0
        last = 0.0
        while True:
            now = time.monotonic() - start
            while events and events[0].at_s <= now:
                event = events.pop(0)
                self.events_late_s = max(self.events_late_s, now - event.at_s)
                self._fire(event, now)
            self._deploys_done(now)
            for device_id, when in list(self.crashed.items()):
                if when <= now:
                    del self.crashed[device_id]
                    self.host.restart(device_id)
                    self._note(now, f"restarted {device_id}")
            for device_id, when in list(self.refill.items()):
                if when <= now:
                    del self.refill[device_id]
                    self.hooks.fill_disk(device_id, False)
                    self._note(now, f"disk of {device_id} has room again")
            self._apply_drift(now)
            self._infer(now - last)
            self.send_labels()
            last = now
            self._check_rollout(now)
            if now >= next_progress:
                next_progress = now + 1.0
                self.progress(self._progress_line(now))
            end = self.scenario.scenario.duration_s
            settled = not self._under_way() or now >= end + DRAIN_TIMEOUT_S
            if now >= end and settled:  # past the end, a rollout still under way gets DRAIN_TIMEOUT_S more
                self.ended_s = now
                break
            time.sleep(STEP_S)

    def _fire(self, event: Any, now: float) -> None:
        devices = self.scenario.devices_of(event.group)
        where = event.group or "all"
        if isinstance(event, Deploy):
            for device_id in devices:
                self.deployed_at[device_id] = now
                self.updated_at.pop(device_id, None)
                self.failed.pop(device_id, None)
                self.hooks.last_errors.pop(device_id, None)  # what went wrong before this deploy is history
            self._deploys.append((now, where, self._deployer.submit(self.deploy, devices)))
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
                if self.shaper is not None:  # cut at the proxy: both ends see the link die
                    self.shaper.cut(device_id, event.offline_s)
                else:
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
        elif isinstance(event, LabelShift):
            self.label_shifts.append((now, event))
            prior = ", ".join(f"{label}: {w:g}" for label, w in event.prior.items())
            self._note(now, f"{event.kind} label shift on {where}: {prior}")
        elif isinstance(event, DiskFull):
            for device_id in self.rng.sample(devices, event.devices):
                self.hooks.fill_disk(device_id)
                if event.for_s > 0:
                    self.refill[device_id] = now + event.for_s
                self._note(now, f"disk of {device_id} full" + (f" for {event.for_s:g}s" if event.for_s else ""))
        elif isinstance(event, ClockSkew):
            for device_id in self.rng.sample(devices, event.devices):
                self.hooks.skew(device_id, event.offset_s)
                self._note(now, f"clock of {device_id} moved by {event.offset_s:+g}s")
        elif isinstance(event, Corrupt):
            assert self.shaper is not None  # a corrupt event makes the scenario shaped
            for device_id in self.rng.sample(devices, event.devices):
                self.shaper.corrupt(device_id, event.chunks)
                self._note(now, f"next {event.chunks} artifact chunk(s) to {device_id} corrupted")

    def _deploys_done(self, now: float) -> None:
        """Note each deploy that has finished; one that failed ends the run with its error, as it did when
        deploys ran on this thread."""
        while self._deploys and self._deploys[0][2].done():
            fired, where, future = self._deploys.pop(0)
            future.result()
            self._note(now, f"deploy to {where} committed and published ({now - fired:.1f}s)")

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
        weights: dict[str, dict[str, float]] = {}
        for began, shift in self.label_shifts:
            prior = shift.weights(now - began)
            for device_id in self.scenario.devices_of(shift.group):
                weights[device_id] = prior  # a later shift on the same device replaces an earlier one
        for device_id, prior in weights.items():
            self.streams[device_id].class_weights = prior

    def send_labels(self) -> None:
        """Labels that have come due go up from their device, on its feedback topic."""
        for device_id, batch in self.labels.due().items():
            transport = self.host.transports[device_id]
            topic = device_topic(device_id, Channel.FEEDBACK, fleet=self.fleet)
            try:
                transport.publish(topic, batch.SerializeToString(), qos=1)
            except TransportError:  # its outbox is full (a long outage): those labels are lost, as in the field
                continue
            self.labels_sent += len(batch.items)

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
            delayed = self.labels.delays(device_id)
            for x, label in stream.rows(n):
                try:
                    if delayed:  # the truth comes later, for sampled predictions only
                        prediction = agent.predict(x)
                        self.labels.predicted(device_id, x, str(label))
                    else:
                        prediction = agent.predict(x, label=str(label))
                except NoModelError:
                    continue  # nothing deployed yet: a real caller would get the same refusal
                except Exception:  # noqa: BLE001 - the agent counted it in its telemetry too
                    outcome.errors += 1
                    continue
                outcome.inferences += 1
                outcome.correct += bool(prediction.labels and prediction.labels[0] == str(label))

    def _check_rollout(self, now: float) -> None:
        if not self._to_check:
            self._to_check = sorted(self.deployed_at.keys() - self.updated_at.keys())
        chosen, self._to_check = self._to_check[:CHECKS_PER_STEP], self._to_check[CHECKS_PER_STEP:]
        for device_id in chosen:
            if device_id in self.updated_at:
                continue
            if self.host.transports[device_id].connected and device_id not in self.crashed:
                self.link_up_since.setdefault(device_id, now)
            else:
                self.link_up_since.pop(device_id, None)
            if self._runs(device_id):
                self.updated_at[device_id] = now
                self.failed.pop(device_id, None)
            elif (failure := self._failure(device_id)) is not None:
                self.failed[device_id] = failure
            else:
                self.failed.pop(device_id, None)
        if self.rollout_s is not None or not self.targeted or self.first_deploy_s is None:
            return
        if len(self.updated_at) == len(self.deployed_at):
            self.rollout_s = now - self.first_deploy_s
            self._note(now, f"every targeted device runs v{self.trained.version}")

    def _failure(self, device_id: str) -> str | None:
        """Why the device's update failed ("code: message"); None while it has not (or has succeeded)."""
        if device_id in self.updated_at:
            return None
        state = self.host.devices[device_id].agent.status()
        if state.update_state == pb.UPDATE_STATE_FAILED:
            return f"{state.last_error.code}: {state.last_error.message}"
        if state.update_state in (pb.UPDATE_STATE_IDLE, pb.UPDATE_STATE_ACTIVE) and device_id not in self.crashed:
            return self.hooks.last_errors.get(device_id)  # refused the deploy: no state changed, an event sent
        return None

    def _why_under_way(self, device_id: str, state: str) -> str:
        """Why an update neither completed nor failed by the end ("code: why"; see the module doc)."""
        since_deploy = self.ended_s - self.deployed_at[device_id]
        if device_id in self.crashed:
            return f"crashed: agent down at the end, still {state}"
        transport = self.host.transports[device_id]
        if not transport.connected:
            cause = transport.last_error or "reconnecting"
            return f"link_down: offline at the end ({cause}), still {state} {since_deploy:.0f}s after its deploy"
        up_s = self.ended_s - self.link_up_since.get(device_id, self.ended_s)
        if up_s < LINK_GRACE_S:
            return f"link_down: link back only {up_s:.0f}s before the end, still {state}"
        return f"stalled: link up for {up_s:.0f}s, still {state} {since_deploy:.0f}s after its deploy, no error"

    def _under_way(self) -> bool:
        return bool(self._deploys) or len(self.updated_at) + len(self.failed) < len(self.deployed_at)

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
        links = self.shaper.links() if self.shaper is not None else {}
        for device_id, outcome in self.outcomes.items():
            state = self.host.devices[device_id].agent.status()
            outcome.state = pb.UpdateState.Name(state.update_state).removeprefix("UPDATE_STATE_").lower()
            outcome.version = state.active_model.version
            if state.HasField("last_error"):
                outcome.error = f"{state.last_error.code}: {state.last_error.message}"
            link = links.get(device_id)
            if link is not None:
                outcome.link_drops, outcome.link_stalls = link.drops, link.stalls
                outcome.corrupted_chunks = link.corrupted
            if device_id in self.deployed_at:
                failure = self._failure(device_id)
                if device_id in self.updated_at:
                    outcome.outcome = "updated"
                    outcome.update_s = round(self.updated_at[device_id] - self.deployed_at[device_id], 2)
                else:
                    outcome.outcome = "failed" if failure else "pending"
                    outcome.reason = failure or self._why_under_way(device_id, outcome.state)
                    outcome.error = failure or outcome.error
            if device_id in self.targeted and not self._runs(device_id):
                failures[device_id] = outcome.reason or outcome.error or f"still {outcome.state}"
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
                drifted=any(o.device_id in drifted for o in members), network=group.network or "",
                updates=_summarise(members), link_drops=sum(o.link_drops for o in members),
                link_stalls=sum(o.link_stalls for o in members),
                corrupted_chunks=sum(o.corrupted_chunks for o in members),
            ))  # fmt: skip
        by_network: dict[str, list[DeviceOutcome]] = {}
        for outcome in self.outcomes.values():
            by_network.setdefault(outcome.network or "unshaped", []).append(outcome)
        return RunReport(
            scenario=self.scenario.scenario.name, devices=len(self.outcomes), version=self.trained.version,
            duration_s=self.scenario.scenario.duration_s,
            rollout_s=None if self.rollout_s is None else round(self.rollout_s, 2),
            groups=groups, failures=failures, timeline=self.log, events_late_s=round(self.events_late_s, 2),
            devices_detail=list(self.outcomes.values()),
            networks={name: _summarise(members) for name, members in sorted(by_network.items())},
            updates=_summarise(list(self.outcomes.values())),
            labels=LabelFlow(sampled=self.labels.sampled_rows, queued=self.labels.queued,
                             delivered=self.labels_sent, owed=self.labels.owed),
        )  # fmt: skip


def _summarise(outcomes: list[DeviceOutcome]) -> UpdateSummary:
    summary = UpdateSummary()
    times = []
    for outcome in outcomes:
        if not outcome.outcome:
            continue
        summary.targeted += 1
        if outcome.outcome == "updated":
            summary.updated += 1
            assert outcome.update_s is not None
            times.append(outcome.update_s)
            continue
        if outcome.outcome == "failed":
            summary.failed += 1
        else:
            summary.pending += 1
            summary.stalled += outcome.reason.startswith("stalled:")
        why = outcome.reason or outcome.error
        code = why.partition(":")[0] if why else f"still {outcome.state}"
        summary.reasons[code] = summary.reasons.get(code, 0) + 1
    if times:
        summary.update_p50_s = round(statistics.median(times), 2)
        summary.update_p95_s = round(_percentile(times, 0.95), 2)
    return summary


def _percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: a value some device really took."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 1)) - 1))]


def sample_budget(info: ScenarioInfo) -> int:
    """The sampler's daily budget for the scenario's devices (ScenarioInfo.sample_bytes_per_day says why)."""
    if info.sample_bytes_per_day is not None:
        return info.sample_bytes_per_day
    # the agent's own defaults (a dataclass's class attributes), not copies of them
    per_day, window_s = AgentSettings.sample_bytes_per_day, AgentSettings.telemetry_interval_s
    return int(per_day * max(window_s / info.telemetry_interval_s, 1.0))
