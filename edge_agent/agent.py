"""The Agent: wires the update state machine, the model slot, telemetry and the store to a transport, and
offers the public API (start/stop, predict/infer, status/wait_for). The I/O of updates is the executor's
(`edge_agent.executor`), everything the agent publishes goes through its outbox (`edge_agent.outbox`),
and what happens at start after a crash is `edge_agent.update.recovery`'s.

What runs it is its runner (`edge_agent.runner`). On a device, the `ThreadRunner` (named, daemonic
threads, joined by stop(); no global state, so many agents can share a process):
    edgefleet-agent-{id}        handles every message, timer and job result in order: the transport's
                                callback only enqueues, so a slow step never stalls the MQTT loop
    edgefleet-agent-{id}-jobs   reads + verifies, loads and self-tests artifacts in the background
In the simulator, a `LoopRunner` runs the same steps on a shared event loop. Either way:
    edgefleet-agent-{id}-shadow while a model is on probation: runs sampled calls through the previous one
Callers' threads run `predict` concurrently; it never waits for the agent's steps.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from time import monotonic, perf_counter
from typing import Any, TypeVar

import numpy as np

from edge_agent.clock import Clock, SystemClock
from edge_agent.config import AgentSettings
from edge_agent.downlink import CommandReceived, parse_inbound
from edge_agent.errors import BadInputError, MalformedPayloadError, NoModelError
from edge_agent.executor import Executor
from edge_agent.facts import FactsReader, FactsSource
from edge_agent.messages import AGENT_VERSION, SeqCounter, presence
from edge_agent.outbox import Outbox
from edge_agent.runner import AgentRunner, ThreadRunner
from edge_agent.serving.hints import COMMAND_FILE, CommandKeeper, hint_mask, names_model
from edge_agent.serving.sample_budget import BUDGET_FILE, DailyBudget
from edge_agent.serving.sampler import Sampler
from edge_agent.serving.shadow import KeptModel
from edge_agent.serving.slot import ModelSlot, ServingModel, as_rows
from edge_agent.serving.telemetry import FeatureBins, Telemetry
from edge_agent.store import DiskModelStore, ModelStore
from edge_agent.transport import Transport
from edge_agent.types import LoadModelFn, PrecheckFn, SelfTestFn
from edge_agent.update import crash_marks, recovery
from edge_agent.update.actions import Emit
from edge_agent.update.chunks import ChunkPolicy
from edge_agent.update.context import REFUSAL_EVENT_INTERVAL_S
from edge_agent.update.events import Connected, DesiredReceived, Event, FanoutSubscribed, HealthCheck, Started, Tick
from edge_agent.update.journal import LastError
from edge_agent.update.machine import Updater, UpdaterConfig
from edge_agent.update.manifest_fetch import ManifestFetch, ManifestReceived, received_digest, wanted_manifest
from edge_agent.update.states import State
from protocols import commands, trust
from protocols.codes import ErrorCode
from protocols.roots import RootOfTrust
from protocols.topics import Channel, TopicError, device_subscriptions
from protocols.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)
T = TypeVar("T")
_FLOAT32 = np.dtype(np.float32)  # compared by identity on the predict path (any other float32 dtype: as_rows)


@dataclass(frozen=True)
class Inference:
    prediction: Any  # a runtime Prediction: .labels / .values / .scores
    model: pb.ModelRef  # the model that answered
    latency_us: float


def _order_runtimes(available: list[str], preference: list[str]) -> tuple[str, ...]:
    """Preferred runtimes first, in the configured order, then the other available ones."""
    return tuple([r for r in preference if r in available] + [r for r in available if r not in preference])


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        transport: Transport,
        *,
        store: ModelStore | None = None,
        clock: Clock | None = None,
        load_model: LoadModelFn | None = None,
        run_self_test: SelfTestFn | None = None,
        runtimes: list[str] | None = None,
        trust: RootOfTrust | None = None,
        tick_interval_s: float = 0.2,
        rng: random.Random | None = None,
        runner: AgentRunner | None = None,
        facts: FactsSource | None = None,
    ) -> None:
        """runner: what runs the agent's steps and jobs (default: its own two threads); facts: what the
        device reports it is (default: read from /proc, /sys and /etc; the simulator passes made-up ones)."""
        self.settings = settings
        self.device_id = settings.device_id
        self.transport = transport
        self.store: ModelStore = store if store is not None else DiskModelStore(settings.state_dir)
        self.clock: Clock = clock or SystemClock()
        precheck: PrecheckFn | None = None
        versions: dict[str, str] = {}
        if load_model is None or runtimes is None:  # onnxruntime & co. only when no runtime was plugged in
            from edge_agent.serving.probe import real_runtimes

            load_model, runtimes, versions, precheck = real_runtimes(settings, load_model, runtimes, AGENT_VERSION)
        if run_self_test is None:
            from edge_agent.serving.selftest import run_self_test as default_self_test

            run_self_test = default_self_test
        self._load_model: LoadModelFn = load_model
        self._run_self_test: SelfTestFn = run_self_test
        self.runtimes = list(runtimes)
        if facts is None:
            facts = FactsReader(settings.state_dir, [(r, versions.get(r, "")) for r in self.runtimes])
        self._facts: FactsSource = facts
        self._crash_stamps = {r: crash_marks.stamp(AGENT_VERSION, versions.get(r, "")) for r in self.runtimes}
        self._root = trust if trust is not None else settings.read_trust()
        self.fleet = self._root.fleet
        self._refused_at_s: dict[str, float] = {}  # malformed downward messages: one event per reason a minute
        self._tick_interval_s = tick_interval_s
        self._stepped_s = monotonic()  # when the loop last finished a step (it steps at least every tick)
        self._slot = ModelSlot()
        self._sampler = Sampler(
            settings.sample_rate, settings.sample_max_per_window, rng,
            budget=DailyBudget(settings.sample_bytes_per_day, settings.state_dir / BUDGET_FILE),
            window_ms=int(settings.telemetry_interval_s * 1000), favour=settings.sample_favour,
            low_confidence=settings.sample_low_confidence,
        )  # fmt: skip
        self._commands = CommandKeeper(settings.state_dir / COMMAND_FILE)  # the cloud's last accepted command
        self._outbox = Outbox(self.device_id, self.fleet, transport, self.clock, self._sampler, settings.report_hold_s,
                              settings.event_hold_s)  # fmt: skip
        shadow_figures = lambda *figures: self._outbox.telemetry.record_shadow(*figures)  # noqa: E731
        rng_shadow = random.Random(rng.random() if rng is not None else None)
        self._kept = KeptModel(settings, shadow_figures, rng_shadow, f"edgefleet-agent-{self.device_id}-shadow")
        self._probation = settings.probation_policy()
        self._updater: Updater | None = None
        # a desired state waiting for the manifest it names
        self._manifests = ManifestFetch(self.fleet, wait_s=settings.manifest_timeout_s)
        self._runner: AgentRunner = runner if runner is not None else ThreadRunner(f"edgefleet-agent-{self.device_id}")
        self._executor = Executor(
            self.device_id,
            store=self.store,
            outbox=self._outbox,
            transport=transport,
            slot=self._slot,
            kept=self._kept,
            counts=lambda: self.counts,
            job_runner=self._runner,
            load_model=self._load_model,
            run_self_test=self._run_self_test,
            post=self._post,
            dispatch=self._dispatch,
            report=self._report,
            precheck=precheck,
        )
        self._started = self._stopped = False
        self._next_tick_s = self._next_flush_s = 0.0
        self._ticking = True  # the last step's state used ticks (an idle one's runner may skip them)

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Restore the active model (serving at once), then connect and reconcile with the desired state."""
        if self._started:
            raise RuntimeError(f"agent {self.device_id} was already started")
        self._started = True
        journal, problems = recovery.load_journal(self.store, self.device_id)
        journal = journal.with_(boot_count=journal.boot_count + 1)
        restored = recovery.restore(
            journal, self.store, self._load_model, self._run_self_test, self._probation, self._crash_stamps
        )
        journal = restored.journal
        recovery.save_journal(self.store, journal, self.device_id)
        self._outbox.seq = SeqCounter(journal.boot_count)
        self._slot.swap(restored.serving)
        now = self.clock.now()
        self._outbox.telemetry = Telemetry(self.device_id, now.wall_ms, restored.serving,
                                           first_window_rows=self.settings.telemetry_first_window_rows)  # fmt: skip
        self._kept.keep(restored.previous, restored.serving, (0, 0))
        self._next_flush_s = now.mono_s + self.settings.telemetry_interval_s
        journal, received = recovery.resume_download(self.store, journal, self.device_id)
        config = UpdaterConfig(
            self.device_id,
            self._root,
            _order_runtimes(self.runtimes, self.settings.runtime_preference),
            ChunkPolicy(self.settings.chunk_window, self.settings.chunk_timeout_s, self.settings.chunk_max_retries),
            self._probation,
            self._crash_stamps,
        )
        self._updater = Updater(config, journal, received)
        kept = self._commands.restore(self._updater.root, self.device_id, now.wall_ms)
        if kept is not None and kept.HasField("sampler_hint"):
            self._sampler.hint(kept.sampler_hint, kept.expires_at_ms, restored.serving, now.wall_ms)

        def announce() -> None:
            self._outbox.emit(Emit(pb.EVENT_KIND_STARTED, model=journal.active))
            for error in problems:
                self._outbox.emit(Emit(pb.EVENT_KIND_ERROR, error=error))
            for installed, error in restored.failures:
                self._outbox.emit(Emit(pb.EVENT_KIND_ERROR, model=installed, error=error))
            if restored.rolled_back:
                self._outbox.emit(Emit(pb.EVENT_KIND_ROLLED_BACK, model=journal.active, error=restored.failures[0][1]))
            if restored.crash_loop is not None:
                self._outbox.emit(restored.crash_loop)
            self._dispatch(Started())

        self._runner.post(announce)  # first in the queue: ahead of anything the transport delivers
        self.transport.set_message_handler(self._on_transport_message)
        self.transport.set_connect_handler(self._on_transport_connect)
        self.transport.set_subscribed_handler(lambda f, granted: self._post(FanoutSubscribed(f, granted)))
        for topic_filter, qos in device_subscriptions(self.device_id, fleet=self.fleet):
            self.transport.subscribe(topic_filter, qos)
        self._runner.start(self._step, self._tick_interval_s, self._say_goodbye)
        self.transport.start()

    def stop(self) -> None:
        """Send the last telemetry window and an offline presence, stop the threads and the transport."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        self._runner.stop()
        self._kept.release()
        self.transport.stop()

    def halt(self) -> None:
        """Stop as a crash would: no last telemetry, no offline presence. The transport is left to the caller,
        who drops the link without a goodbye so that the broker's will says it (simulator.host.crash)."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        self._runner.halt()
        self._kept.release()

    # ------------------------------------------------------------------------------------------ serving

    def predict(self, x: Any, label: str | None = None, prediction_id: str | Sequence[str] | None = None) -> Any:
        """Predict rows of x (one row, or a 2-D batch) with the active model; returns its Prediction.
        `prediction_id` (one per row): the caller's name for the prediction, carried by a sampled row so a
        label that arrives later (the feedback topic, POST /api/v1/feedback) finds it.
        Raises NoModelError before a model is active, an error with code "bad_input" for a bad x."""
        return self._serve(x, label, prediction_id)[1]

    def infer(self, x: Any, label: str | None = None, prediction_id: str | Sequence[str] | None = None) -> Inference:
        """Like predict, also saying which model answered and how long it took."""
        serving, prediction, latency_us = self._serve(x, label, prediction_id)
        return Inference(prediction, serving.ref, latency_us)

    def _serve(
        self, x: Any, label: str | None, prediction_id: str | Sequence[str] | None = None
    ) -> tuple[ServingModel, Any, float]:
        # the hot path: every step here is paid on each call, so each is a few hundred ns at most
        rows = x if type(x) is np.ndarray and x.ndim == 2 and x.dtype is _FLOAT32 else as_rows(x)
        serving = self._slot.current  # read once, as ModelSlot.predict does (inlined here: a frame less per call)
        if serving is None:
            raise NoModelError("no model is active on this device yet")
        started = perf_counter()
        try:
            prediction = serving.model.predict(rows)
        except (NoModelError, BadInputError):  # the caller's mistake, not the model's: not an inference error,
            raise  # so a buggy local client cannot fail a rollout's error gate or the probation health check
        except Exception:
            if self._outbox.telemetry.record_error((perf_counter() - started) * 1e6):
                self._runner.post(self._flush_first_window)
            raise
        latency_us = (perf_counter() - started) * 1e6
        if self._outbox.telemetry.record(serving, rows, prediction, latency_us, label):
            self._runner.post(self._flush_first_window)  # a new model's first window, full enough: send it now
        if prediction_id is not None and isinstance(prediction_id, str):
            prediction_id = [prediction_id]
        self._sampler.offer(serving, rows, prediction, label, self._now_ms, prediction_id)
        self._kept.offer(serving, rows, prediction)  # never blocks: the shadow runs on its own thread
        return serving, prediction, latency_us

    def _now_ms(self) -> int:
        return self.clock.now().wall_ms

    @property
    def serving(self) -> ServingModel | None:
        return self._slot.current

    def loop_stalled_s(self) -> float:
        """Seconds since the agent's loop last finished a step; on a device (`ThreadRunner`) it steps at least
        every tick while it runs, so this grows only when a step hangs (`edgefleet-agent run` then stops pinging
        systemd's watchdog). A simulator's `LoopRunner` leaves an idle agent unstepped for longer."""
        return monotonic() - self._stepped_s

    def status(self) -> pb.ReportedState:
        """The last ReportedState (a copy)."""
        return self._outbox.reported()

    def read_status(self, read: Callable[[pb.ReportedState], T]) -> T:
        """read(the last ReportedState), in place: no copy, for polling thousands of agents (a copy each was
        most of a simulator worker's poll). read must neither keep nor change the state it is given."""
        return self._outbox.read_reported(read)

    @property
    def counts(self) -> tuple[int, int]:
        """(inferences, errors) since start."""
        return self._outbox.telemetry.total_inferences, self._outbox.telemetry.total_errors

    def wait_for(self, predicate: Callable[[pb.ReportedState], bool], timeout_s: float) -> bool:
        """Wait until predicate(ReportedState) holds (checked after every report); False on timeout."""
        return self._outbox.wait_for(predicate, timeout_s)

    def flush_telemetry(self) -> pb.TelemetryWindow | None:
        """End the telemetry window now: publish it (and the window's samples); return it."""
        return self._outbox.flush_telemetry(self._slot.current)

    def _flush_first_window(self) -> None:
        self._outbox.flush_telemetry(self._slot.current)

    # ------------------------------------------------------------------------------------------ worker

    def _on_transport_message(self, topic: str, payload: bytes) -> None:
        self._runner.post(partial(self._handle_message, topic, payload))

    def _on_transport_connect(self) -> None:
        self._runner.post(self._handle_connect)

    def _post(self, event: Event) -> None:
        self._runner.post(partial(self._dispatch, event))

    def _step(self, item: Callable[[], None] | None) -> float | None:
        """One step, run by the runner: a queued item (None on a tick), then the timers. Returns in how many
        seconds the timers next have something to do (`AgentRunner.start`; None: at the next tick)."""
        due_in_s = None
        try:
            if item is not None:
                item()
            due_in_s = self._housekeeping()
        except Exception:  # noqa: BLE001 - the agent's loop must outlive any bug in one step
            log.exception("agent %s: unexpected error", self.device_id)
        self._outbox.notify()
        self._stepped_s = monotonic()
        return due_in_s

    def _say_goodbye(self) -> None:
        try:
            self._outbox.send_held()
            self._outbox.flush_telemetry(self._slot.current)
            self._outbox.publish(Channel.PRESENCE, presence(self.device_id, False, self.clock.now().wall_ms))
        except Exception:  # noqa: BLE001
            log.exception("agent %s: error while stopping", self.device_id)

    def _housekeeping(self) -> float:
        """The timers: Tick / HealthCheck while the machine uses them, the late manifest, the telemetry window,
        what the outbox holds. Returns the seconds until one of them is next due."""
        now = self.clock.now()
        updater = self._updater
        assert updater is not None
        # the states whose machine uses a timer event (a download's chunk deadlines, a probation's health),
        # or a desired state waiting for its manifest: only these need a tick every interval
        ticking = updater.expects(Tick.kind) or updater.expects(HealthCheck.kind) or self._manifests.topic is not None
        if ticking and not self._ticking:  # the first tick an interval after it starts (not at once after a
            self._next_tick_s = now.mono_s + self._tick_interval_s  # runner that left an idle agent alone)
        self._ticking = ticking
        if now.mono_s >= self._next_tick_s:
            self._next_tick_s = now.mono_s + self._tick_interval_s
            # a Tick or HealthCheck the machine would ignore in its state (idle: both) is not built at all
            if self.transport.connected:  # while offline, chunk deadlines do not run out
                if updater.expects(Tick.kind):
                    self._dispatch(Tick())
                late = self._manifests.overdue(now.mono_s)
                if late is not None:  # refused as a desired state without its manifest, and still awaited
                    self._dispatch(late)
            if updater.expects(HealthCheck.kind):  # offline too: probation runs
                self._dispatch(HealthCheck(*self._kept.since_kept(self.counts), *self._kept.shadow_since_kept()))
        if now.mono_s >= self._next_flush_s:
            self._next_flush_s = now.mono_s + self.settings.telemetry_interval_s
            self._outbox.flush_telemetry(self._slot.current)
        self._outbox.send_due()
        due_s = min(self._next_tick_s, self._next_flush_s) if self._ticking else self._next_flush_s
        held_s = self._outbox.due_s
        if held_s is not None:
            due_s = min(due_s, held_s)
        return max(0.0, due_s - now.mono_s)

    def _handle_connect(self) -> None:
        self._manifests.connected(self.clock.now().mono_s)
        self._outbox.publish(Channel.PRESENCE, presence(self.device_id, True, self.clock.now().wall_ms))
        self._dispatch(Connected())
        self._report()

    def _handle_message(self, topic: str, payload: bytes) -> None:
        try:
            event = parse_inbound(self.device_id, topic, payload, fleet=self.fleet)
        except MalformedPayloadError as exc:
            self._refuse(topic, exc.code, str(exc))
            return
        if event is None:
            log.info("agent %s: ignoring message on %s (no handler in this version)", self.device_id, topic)
            return
        if isinstance(event, CommandReceived):
            self._handle_command(topic, event.payload)
            return
        if isinstance(event, ManifestReceived):
            self._handle_manifest(event)
            return
        if isinstance(event, DesiredReceived):
            self._handle_desired(event)
            return
        self._dispatch(event)

    def _handle_desired(self, event: DesiredReceived) -> None:
        """Hand the machine a desired state, or hold one that names a manifest it does not carry until that
        manifest comes from the fleet-wide topic (`edge_agent.update.manifest_fetch`)."""
        assert self._updater is not None
        desired, left = event.desired, self._manifests.release()  # a newer desired state replaces a held one
        self._outbox.cloud_capabilities = frozenset(desired.cloud_capabilities)  # an older cloud's: none
        sha256 = wanted_manifest(desired)
        topic = None
        if sha256 is not None:
            digest = received_digest(desired)
            if self._updater.verified_before(digest):  # the retained re-delivery: no manifest needed
                event = DesiredReceived(desired, received_sha256=digest)
            else:
                with contextlib.suppress(TopicError):  # not a digest: the machine refuses it as it came
                    topic = self._manifests.hold(desired, sha256, digest, self.transport.connected,
                                                 self.clock.now().mono_s)  # fmt: skip
        if left is not None and left != topic:
            self.transport.unsubscribe(left)
        if topic is not None:
            self.transport.subscribe(topic, 1)  # (again) brings the retained manifest
            return
        self._dispatch(event)

    def _handle_manifest(self, manifest: ManifestReceived) -> None:
        topic = self._manifests.topic
        whole = self._manifests.received(manifest)
        if whole is None:
            return  # not the one a held desired state names (an earlier one's, re-delivered)
        if topic is not None:
            self.transport.unsubscribe(topic)
        self._dispatch(whole)

    def _refuse(self, topic: str, code: str, why: str) -> None:
        """A message refused: logged, and told to the cloud as an error event once per reason a minute."""
        log.warning("agent %s: refused a message on %s (%s): %s", self.device_id, topic, code, why)
        now_s = self.clock.now().mono_s
        last = self._refused_at_s.get(code)
        if last is None or now_s - last >= REFUSAL_EVENT_INTERVAL_S:
            self._refused_at_s[code] = now_s
            self._outbox.emit(Emit(pb.EVENT_KIND_ERROR, error=LastError(code, why)))

    def _handle_command(self, topic: str, payload: bytes) -> None:
        """A signed command from the cloud (protocols.commands): verified, then kept and acted on."""
        assert self._updater is not None
        now_ms = self.clock.now().wall_ms
        try:
            signed = commands.parse_signed(payload)
            command = commands.verify_command(signed, self._updater.root, device_id=self.device_id,
                                              last_counter=self._commands.counter, now_ms=now_ms)  # fmt: skip
        except trust.VerificationError as exc:
            self._refuse(topic, exc.code, str(exc))
            return
        if not command.HasField("sampler_hint"):
            log.info("agent %s: command %d has no body this agent knows", self.device_id, command.counter)
            self._commands.accept(signed, command)
            return
        hint, serving = command.sampler_hint, self._slot.current
        if serving is not None and names_model(hint, serving.ref):
            bins = FeatureBins.of(serving.manifest.reference.features)
            bad = hint_mask(hint, bins)[1] if bins is not None else ["every bin (the profile bins no feature)"]
            if bad:  # the cloud read another profile than this model's: refused whole, the counter unmoved
                why = f"sampler hint {command.counter} names {len(bad)} bin(s) {serving.ref.model_id} lacks: {bad[0]}"
                self._refuse(topic, ErrorCode.MALFORMED, why)
                return
        self._commands.accept(signed, command)
        self._sampler.hint(hint, command.expires_at_ms, serving, now_ms)
        log.info("agent %s: sampler hint %d: %d bin(s) of %s@%s until %d", self.device_id, command.counter,
                 len(hint.bins), hint.model.model_id, hint.model.version, command.expires_at_ms)  # fmt: skip

    def _dispatch(self, event: Event) -> None:
        assert self._updater is not None
        self._executor.execute(self._updater.handle(event, self.clock.now()))

    def _report(self) -> None:
        assert self._updater is not None
        crashed = self._updater.journal.crashed_runtimes  # a runtime that killed the agent is not offered
        runtimes = [r for r in self.runtimes if r not in crashed]
        self._outbox.report(self._updater.view(), dict(self.settings.labels), runtimes, self._facts.read())

    @property
    def update_state(self) -> State:
        return self._updater.state if self._updater else State.IDLE
