"""`AgentHost`: thousands of simulated devices in one process, each running the real `edge_agent.Agent`
(update state machine, store, telemetry, sampler: the code a device runs) with its own state directory
and its own MQTT connection, all on one asyncio event loop.

What they share, because a real fleet would not notice: the event loop (`edge_agent.runner.LoopRunner`
runs each agent's steps there; `simulator.loop_transport.LoopTransport` is each one's MQTT client), where
the slow jobs (verify, load, self-test) run too, each as a callback of its own after the step that asked for
it (`edge_agent.runner.OnLoop`: they are short here; `job_threads` > 0 gives them a thread pool), and loaded
models: one inference session per
artifact digest (`SharedModels`; a session is read-only once loaded, and the digest names the bytes),
and self-test results: one run per (model, self-test) (`SharedSelfTests`), and signature checks: one per
distinct signed bytes and key (`simulator.verified`). Each device still downloads,
verifies, loads (a cache hit) and self-tests (a cache hit) its artifact itself.

At most `update_slots` devices take a new desired state in at once, the rest waiting their turn
(`simulator.update_slots`: a shared loop otherwise runs every update of a rollout in lockstep).

Devices report made-up hardware (`DeviceSpec.facts`) where the scenario gives some, else this machine's.
Their store does not fsync (`DiskModelStore(sync=False)`): a simulated power cut is `crash()`.

Still one thread per device: while a new model is on probation with a previous one kept, the agent's
shadow (`edge_agent.serving.shadow`) runs on a thread of its own; for thousands of devices updating from
one model to the next, pass `settings_overrides={"shadow_rate": 0}` (no shadowing) or expect that many.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, Protocol

from edge_agent.agent import Agent
from edge_agent.clock import Clock
from edge_agent.config import AgentSettings, Secret
from edge_agent.facts import FactsReader, FactsSource
from edge_agent.messages import AGENT_VERSION, offline_will
from edge_agent.runner import LoopRunner, OnLoop
from edge_agent.store import DiskModelStore, ModelStore
from edge_agent.transport import Transport
from edge_agent.types import LoadedModelLike, LoadModelFn, SelfTestFn, SelfTestResultLike
from protocols.v1 import messages_pb2 as pb
from simulator import verified
from simulator.devices import DeviceGroup, SimulatedDevice
from simulator.loop_thread import LoopThread
from simulator.loop_transport import LoopTransport
from simulator.update_slots import UPDATE_SLOTS, UpdateSlots

__all__ = ["AgentHost", "DeviceHooks", "DeviceSpec", "SharedModels", "SharedSelfTests", "StaticFacts"]

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 1.0  # the agent's timers (chunk deadlines, probation checks); a device uses 0.2 s
CONNECT_CONCURRENCY = 64  # handshakes in flight at once


@dataclass(frozen=True)
class DeviceSpec:
    device_id: str
    labels: dict[str, str] = field(default_factory=dict)
    password: str | None = None  # the broker password enrollment gave it (the user name is the device id)
    facts: pb.DeviceFacts | None = None  # the hardware it claims to be; None: this machine's
    mqtt_url: str | None = None  # where it connects, if not the host's broker (e.g. a shaping proxy)


class DeviceHooks(Protocol):
    """How a scenario reaches into a device for faults (simulator.faults): called on every (re)start."""

    def store(self, device_id: str, store: ModelStore) -> ModelStore: ...

    def clock(self, device_id: str) -> Clock | None: ...

    def transport(self, device_id: str, transport: Transport) -> Transport: ...


class StaticFacts:
    """A FactsSource that always says the same (a simulated device's hardware)."""

    def __init__(self, facts: pb.DeviceFacts) -> None:
        self._facts = facts

    def read(self) -> pb.DeviceFacts:
        return self._facts


class SharedModels:
    """A LoadModelFn that loads each (artifact digest, io schema) once and hands every caller that model."""

    def __init__(self, load: LoadModelFn) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._models: dict[tuple[str, bytes], LoadedModelLike] = {}
        self._loading: dict[tuple[str, bytes], threading.Lock] = {}
        self.loads = 0  # real loads, for reports

    def __call__(self, artifact: pb.Artifact, data: bytes, io: pb.IoSchema) -> LoadedModelLike:
        key = (artifact.sha256, io.SerializeToString(deterministic=True))
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                return model
            once = self._loading.setdefault(key, threading.Lock())
        with once:  # one load per key even when many devices ask at once; a failure is retried by the next
            with self._lock:
                model = self._models.get(key)
            if model is None:
                model = self._load(artifact, data, io)
                with self._lock:
                    self._models[key] = model
                    self.loads += 1
        return model

    def __len__(self) -> int:
        return len(self._models)


class SharedSelfTests:
    """A SelfTestFn that runs each (model, self-test, io schema) once and gives every caller that result.

    The model is one object per artifact digest (`SharedModels`), read-only once loaded, and the vectors are
    the manifest's: every device of the process would compute the same answer (it was 7 % of a worker's
    samples in a 1,000-device rollout). Each device still runs its own self-test step and acts on its result.
    """

    def __init__(self, run: SelfTestFn) -> None:
        self._run = run
        self._lock = threading.Lock()
        # keyed by the model's identity: the value holds the model, so the id is not reused while cached
        self._results: dict[tuple[int, bytes, bytes], tuple[LoadedModelLike, SelfTestResultLike]] = {}
        self._running: dict[tuple[int, bytes, bytes], threading.Lock] = {}
        self.runs = 0  # real runs, for reports and tests

    def __call__(self, model: LoadedModelLike, self_test: pb.SelfTest, io: pb.IoSchema) -> SelfTestResultLike:
        key = (id(model), self_test.SerializeToString(deterministic=True), io.SerializeToString(deterministic=True))
        with self._lock:
            once = self._running.setdefault(key, threading.Lock())
        with once:  # one run per key even when the job threads ask at once
            with self._lock:
                cached = self._results.get(key)
            if cached is not None and cached[0] is model:
                return cached[1]
            result = self._run(model, self_test, io)
            with self._lock:
                self._results[key] = (model, result)
                self.runs += 1
        return result


def _update_status(state: pb.ReportedState) -> tuple[int, int]:
    return state.update_state, state.desired_generation


class AgentHost(DeviceGroup):
    """N agents on one event loop (in a thread of its own): `start()`, then the DeviceGroup operations."""

    def __init__(
        self,
        devices: Sequence[DeviceSpec],
        *,
        mqtt_url: str,
        trust_path: Path,
        state_root: Path,
        mqtt_protocol: Literal["5", "3.1.1"] = "3.1.1",
        telemetry_interval_s: float = 3600.0,
        sample_rate: float = 0.05,
        tick_interval_s: float = TICK_INTERVAL_S,
        job_threads: int = 0,
        load_model: LoadModelFn | None = None,
        runtimes: list[str] | None = None,
        settings_overrides: dict[str, object] | None = None,
        hooks: DeviceHooks | None = None,
        keepalive_s: int = 60,
        update_slots: int = UPDATE_SLOTS,
    ) -> None:
        """keepalive_s: the MQTT keepalive of every device's connection. Thousands of agents share this loop,
        so when it falls behind their pings are late together, which no real device's would be; a longer
        keepalive keeps the broker from dropping them for it (and makes it notice a link that goes silent
        without closing, as through a partitioning proxy, that much later).
        update_slots: how many of these devices take a new desired state in at once, the rest waiting their
        turn (`simulator.update_slots`: a shared loop would otherwise run every update in lockstep); 0: all."""
        verified.install()  # a signature the process checked once (the fleet's manifest, chain) is not re-checked
        self._hooks = hooks
        self._keepalive_s = keepalive_s
        self._loop = LoopThread("edgefleet-sim-host")
        # the jobs on the loop: a thread pool's hand-off cost more CPU than the jobs (cache hits, a sha256)
        self._jobs: ThreadPoolExecutor | OnLoop = (
            ThreadPoolExecutor(job_threads, thread_name_prefix="edgefleet-sim-jobs")
            if job_threads > 0
            else OnLoop(self._loop.loop)
        )
        self._gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        self.update_slots = UpdateSlots(self._loop.loop, update_slots)
        self._tick_interval_s = tick_interval_s
        self.transports: dict[str, LoopTransport] = {}
        self.devices: dict[str, SimulatedDevice] = {}
        self._specs = {spec.device_id: spec for spec in devices}
        self._settings: dict[str, AgentSettings] = {}
        overrides = dict(settings_overrides or {})
        for spec in devices:
            self._settings[spec.device_id] = AgentSettings(
                device_id=spec.device_id,
                mqtt_url=spec.mqtt_url or mqtt_url,
                mqtt_username=spec.device_id if spec.password is not None else None,
                mqtt_password=Secret(spec.password) if spec.password is not None else None,
                mqtt_protocol=mqtt_protocol,
                trust_path=trust_path,
                state_dir=state_root / spec.device_id,
                grpc_address="",
                telemetry_interval_s=telemetry_interval_s,
                sample_rate=sample_rate,
                labels=dict(spec.labels),
                isolate_loads=False,  # no child process per device and update
                **overrides,  # type: ignore[arg-type]
            )
        first = next(iter(self._settings.values()), None)
        versions: dict[str, str] = {}
        if first is not None and (load_model is None or runtimes is None):
            from edge_agent.serving.probe import real_runtimes

            load_model, runtimes, versions, _precheck = real_runtimes(first, load_model, runtimes, AGENT_VERSION)
        self.models = SharedModels(load_model) if load_model is not None else None
        from edge_agent.serving.selftest import run_self_test

        self.self_tests = SharedSelfTests(run_self_test)
        self._runtimes = list(runtimes or [])
        self._machine_facts = FactsReader(state_root, [(r, versions.get(r, "")) for r in self._runtimes])
        self.trust = first.read_trust() if first is not None else None
        for device_id in self._settings:
            self.devices[device_id] = self._new_device(device_id)

    def __enter__(self) -> AgentHost:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def loop(self) -> LoopThread:
        return self._loop

    def _new_device(self, device_id: str) -> SimulatedDevice:
        settings = self._settings[device_id]
        assert self.trust is not None and self.models is not None
        transport = LoopTransport(
            settings.mqtt_url,
            device_id,
            loop=self._loop.loop,
            username=settings.mqtt_username,
            password=settings.mqtt_password.get_secret_value() if settings.mqtt_password else None,
            will=offline_will(device_id, fleet=self.trust.fleet),
            tls_ca=str(settings.tls_ca) if settings.tls_ca else None,
            protocol=settings.mqtt_protocol,
            connect_gate=self._gate,
            max_queued=settings.outbox_max_messages,
            keepalive_s=self._keepalive_s,
        )
        spec = self._specs[device_id]
        facts: FactsSource = StaticFacts(spec.facts) if spec.facts is not None else self._machine_facts
        store: ModelStore = DiskModelStore(settings.state_dir, sync=False)  # a simulated power cut is a crash()
        hooks = self._hooks
        slotted = self.update_slots.transport(device_id, transport, partial(self._update_status, device_id))
        agent = Agent(
            settings,
            slotted if hooks is None else hooks.transport(device_id, slotted),
            store=store if hooks is None else hooks.store(device_id, store),
            clock=None if hooks is None else hooks.clock(device_id),
            load_model=self.models,
            run_self_test=self.self_tests,
            runtimes=self._runtimes,
            trust=self.trust,
            tick_interval_s=self._tick_interval_s,
            runner=LoopRunner(self._loop.loop, self._jobs, cork=transport),
            facts=facts,
        )
        self.transports[device_id] = transport
        return SimulatedDevice(settings, agent)

    def _update_status(self, device_id: str) -> tuple[int, int]:
        return self.devices[device_id].agent.read_status(_update_status)

    def start(self, device_ids: Sequence[str] | None = None) -> None:
        chosen = list(device_ids) if device_ids is not None else list(self.devices)
        for n in range(0, len(chosen), 50):  # on the loop, in batches: the loop keeps serving in between
            self._loop.call(partial(self._start_on_loop, chosen[n : n + 50]))

    def _start_on_loop(self, device_ids: list[str]) -> None:
        for device_id in device_ids:
            self.devices[device_id].agent.start()

    def stop(self, device_ids: Sequence[str] | None = None) -> None:
        """Stop agents (all by default) as a device shutting down would: last telemetry, offline presence."""
        chosen = list(device_ids) if device_ids is not None else list(self.devices)
        if not self._loop.loop.is_closed():
            self._loop.run(self._stop_on_loop(chosen), timeout_s=60 + len(chosen) * 0.05)
        if device_ids is None:
            self._jobs.shutdown(wait=True, cancel_futures=True)
            self._loop.stop()

    async def _stop_on_loop(self, device_ids: list[str]) -> None:
        for device_id in device_ids:  # on the loop, each agent's goodbye runs at once
            self.devices[device_id].agent.stop()
        closing = [t.closing for d in device_ids if (t := self.transports[d]).closing is not None]
        if closing:
            await asyncio.wait(closing, timeout=30)

    # -- faults ----------------------------------------------------------------------------------------

    def disconnect(self, device_id: str, offline_s: float) -> None:
        """Cut a device's link (its will fires) for offline_s; the agent keeps running meanwhile."""
        self.transports[device_id].drop(offline_s)

    def crash(self, device_id: str) -> None:
        """Kill a device's agent: no goodbye, its link just drops (the broker publishes its will)."""
        device = self.devices[device_id]
        device.agent.halt()
        self._loop.loop.call_soon_threadsafe(self.update_slots.forget, device_id)
        transport = self.transports[device_id]
        transport.drop(0.0)
        transport.stop()

    def restart(self, device_id: str) -> None:
        """Start a crashed (or stopped) device again: a new agent on the same state directory."""
        self.devices[device_id] = self._new_device(device_id)
        self.devices[device_id].agent.start()

    def status_counts(self, key: Callable[[pb.ReportedState], object]) -> dict[object, int]:
        counts: dict[object, int] = {}
        for device in self.devices.values():
            value = device.agent.read_status(key)
            counts[value] = counts.get(value, 0) + 1
        return counts
