"""The Agent: wires the update state machine, the model slot, telemetry and the store to a transport.

Threads (named, daemonic, joined by stop(); no global state, so many agents can share a process):
    edgefleet-agent-{id}        handles every message, timer and job result in order: the transport's
                                callback only enqueues, so a slow step never stalls the MQTT loop
    edgefleet-agent-{id}-jobs   reads + verifies, loads and self-tests artifacts in the background
Callers' threads run `predict` concurrently; it never waits for the agent's threads.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
from google.protobuf.message import Message

from edge_agent import jobs
from edge_agent.chunks import ChunkPolicy
from edge_agent.clock import Clock, SystemClock
from edge_agent.config import AgentSettings
from edge_agent.errors import BadInputError, MalformedPayloadError, NoModelError, StoreError
from edge_agent.inbox import parse_inbound
from edge_agent.journal import Journal, LastError
from edge_agent.messages import SeqCounter, lifecycle_event, presence, reported_state
from edge_agent.restore import restore
from edge_agent.sampler import Sampler
from edge_agent.serving import ModelSlot, ServingModel
from edge_agent.store import DiskModelStore, ModelStore
from edge_agent.telemetry import Telemetry
from edge_agent.transport import Transport, TransportError
from edge_agent.types import LoadModelFn, SelfTestFn
from edge_agent.updater import Updater, UpdaterConfig
from edge_agent.updater_types import (
    Aborted,
    Action,
    Activate,
    BeginDownload,
    CommitDownload,
    Connected,
    DiscardDownload,
    Emit,
    Event,
    LoadModel,
    PruneModels,
    Report,
    RequestChunks,
    RunSelfTest,
    SaveJournal,
    Started,
    State,
    Tick,
    VerifyArtifact,
    WriteChunk,
)
from protocols import SCHEMA_VERSION, trust
from protocols.codes import ErrorCode
from protocols.topics import Channel, device_subscriptions, device_topic
from protocols.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)

_STOP = object()
JOIN_TIMEOUT_S = 10.0


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
        root_key: bytes | None = None,
        tick_interval_s: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.device_id = settings.device_id
        self.transport = transport
        self.store: ModelStore = store if store is not None else DiskModelStore(settings.state_dir)
        self.clock: Clock = clock or SystemClock()
        if load_model is None or runtimes is None:
            from edge_agent import runtime  # onnxruntime & co. only when no runtime was plugged in

            load_model = load_model or runtime.load_model
            runtimes = runtimes if runtimes is not None else runtime.available_runtimes()
        if run_self_test is None:
            from edge_agent.selftest import run_self_test as default_self_test

            run_self_test = default_self_test
        self._load_model: LoadModelFn = load_model
        self._run_self_test: SelfTestFn = run_self_test
        self.runtimes = list(runtimes)
        self._root = trust.TrustedRoot.of(root_key if root_key is not None else settings.read_root_key())
        self._tick_interval_s = tick_interval_s
        self._slot = ModelSlot()
        self._telemetry = Telemetry(self.device_id, self.clock.now().wall_ms)
        self._sampler = Sampler(settings.sample_rate, settings.sample_max_per_window, rng)
        self._flush_lock = threading.Lock()
        self._seq = SeqCounter(0)
        self._updater: Updater | None = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._changed = threading.Condition()
        self._reported = pb.ReportedState(
            schema_version=SCHEMA_VERSION, device_id=self.device_id, update_state=pb.UPDATE_STATE_IDLE
        )
        self._worker = threading.Thread(target=self._run, name=f"edgefleet-agent-{self.device_id}", daemon=True)
        self._jobs = jobs.JobRunner(f"edgefleet-agent-{self.device_id}-jobs")
        self._started = self._stopped = False
        self._next_tick_s = self._next_flush_s = 0.0

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Restore the active model (serving at once), then connect and reconcile with the desired state."""
        if self._started:
            raise RuntimeError(f"agent {self.device_id} was already started")
        self._started = True
        journal, problems = self._load_journal()
        journal = journal.with_(boot_count=journal.boot_count + 1)
        restored = restore(journal, self.store, self._load_model, self._run_self_test)
        journal = restored.journal
        self._save_journal(journal)
        self._seq = SeqCounter(journal.boot_count)
        self._slot.swap(restored.serving)
        now = self.clock.now()
        self._telemetry = Telemetry(self.device_id, now.wall_ms, restored.serving)
        self._next_flush_s = now.mono_s + self.settings.telemetry_interval_s
        journal, received = self._resume_download(journal)
        config = UpdaterConfig(
            self._root,
            _order_runtimes(self.runtimes, self.settings.runtime_preference),
            ChunkPolicy(self.settings.chunk_window, self.settings.chunk_timeout_s, self.settings.chunk_max_retries),
        )
        self._updater = Updater(config, journal, received)

        def announce() -> None:
            self._emit(Emit(pb.EVENT_KIND_STARTED, model=journal.active))
            for error in problems:
                self._emit(Emit(pb.EVENT_KIND_ERROR, error=error))
            for installed, error in restored.failures:
                self._emit(Emit(pb.EVENT_KIND_ERROR, model=installed, error=error))
            if restored.rolled_back:
                self._emit(Emit(pb.EVENT_KIND_ROLLED_BACK, model=journal.active, error=restored.failures[0][1]))
            self._dispatch(Started())

        self._queue.put(announce)  # first in the queue: ahead of anything the transport delivers
        self.transport.set_message_handler(self._on_transport_message)
        self.transport.set_connect_handler(self._on_transport_connect)
        for topic_filter, qos in device_subscriptions(self.device_id):
            self.transport.subscribe(topic_filter, qos)
        self._worker.start()
        self._jobs.start()
        self.transport.start()

    def stop(self) -> None:
        """Send the last telemetry window and an offline presence, stop the threads and the transport."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        if self._worker.is_alive():
            self._queue.put(_STOP)
            self._worker.join(JOIN_TIMEOUT_S)
        self._jobs.stop(JOIN_TIMEOUT_S)
        self.transport.stop()

    # ------------------------------------------------------------------------------------------ serving

    def predict(self, x: Any, label: str | None = None) -> Any:
        """Predict rows of x (one row, or a 2-D batch) with the active model; returns its Prediction.
        Raises NoModelError before a model is active, an error with code "bad_input" for a bad x."""
        return self.infer(x, label).prediction

    def infer(self, x: Any, label: str | None = None) -> Inference:
        """Like predict, also saying which model answered and how long it took."""
        rows = _as_rows(x)
        started = time.perf_counter()
        try:
            serving, prediction = self._slot.predict(rows)
        except NoModelError:
            raise
        except Exception:
            self._telemetry.record_error((time.perf_counter() - started) * 1e6)
            raise
        latency_us = (time.perf_counter() - started) * 1e6
        self._telemetry.record(serving, rows, prediction, latency_us, label)
        self._sampler.offer(serving, rows, prediction, label, self._now_ms)
        return Inference(prediction, serving.ref, latency_us)

    def _now_ms(self) -> int:
        return self.clock.now().wall_ms

    @property
    def serving(self) -> ServingModel | None:
        return self._slot.current

    def status(self) -> pb.ReportedState:
        """The last ReportedState (a copy)."""
        with self._changed:
            state = pb.ReportedState()
            state.CopyFrom(self._reported)
            return state

    @property
    def counts(self) -> tuple[int, int]:
        """(inferences, errors) since start."""
        return self._telemetry.total_inferences, self._telemetry.total_errors

    def wait_for(self, predicate: Callable[[pb.ReportedState], bool], timeout_s: float) -> bool:
        """Wait until predicate(ReportedState) holds (checked after every report); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._reported), timeout_s)

    def flush_telemetry(self) -> pb.TelemetryWindow | None:
        """End the telemetry window now: publish it (and the window's samples); return it."""
        return self._flush_telemetry(self._slot.current)

    # ------------------------------------------------------------------------------------------ worker

    def _on_transport_message(self, topic: str, payload: bytes) -> None:
        self._queue.put(partial(self._handle_message, topic, payload))

    def _on_transport_connect(self) -> None:
        self._queue.put(self._handle_connect)

    def _post(self, event: Event) -> None:
        self._queue.put(partial(self._dispatch, event))

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._tick_interval_s)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            try:
                if item is not None:
                    item()
                self._housekeeping()
            except Exception:  # noqa: BLE001 - the agent's loop must outlive any bug in one step
                log.exception("agent %s: unexpected error", self.device_id)
            with self._changed:
                self._changed.notify_all()
        try:
            self._flush_telemetry(self._slot.current)
            self._publish(Channel.PRESENCE, presence(self.device_id, False, self.clock.now().wall_ms))
        except Exception:  # noqa: BLE001
            log.exception("agent %s: error while stopping", self.device_id)

    def _housekeeping(self) -> None:
        now = self.clock.now()
        if now.mono_s >= self._next_tick_s:
            self._next_tick_s = now.mono_s + self._tick_interval_s
            if self.transport.connected:  # while offline, chunk deadlines do not run out
                self._dispatch(Tick())
        if now.mono_s >= self._next_flush_s:
            self._next_flush_s = now.mono_s + self.settings.telemetry_interval_s
            self._flush_telemetry(self._slot.current)

    def _handle_connect(self) -> None:
        self._publish(Channel.PRESENCE, presence(self.device_id, True, self.clock.now().wall_ms))
        self._dispatch(Connected())
        self._report()

    def _handle_message(self, topic: str, payload: bytes) -> None:
        try:
            event = parse_inbound(self.device_id, topic, payload)
        except MalformedPayloadError as exc:
            log.warning("agent %s: malformed message on %s: %s", self.device_id, topic, exc)
            self._emit(Emit(pb.EVENT_KIND_ERROR, error=LastError(exc.code, str(exc))))
            return
        if event is None:
            log.info("agent %s: ignoring message on %s (no handler in this version)", self.device_id, topic)
            return
        self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        assert self._updater is not None
        self._execute(self._updater.handle(event, self.clock.now()))

    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            try:
                self._run_action(action)
            except Exception as exc:  # noqa: BLE001 - I/O failed: fail the update, keep serving
                log.error("agent %s: %s failed: %s", self.device_id, type(action).__name__, exc)
                code = getattr(exc, "code", ErrorCode.AGENT_ERROR)
                attempt = getattr(action, "attempt", None)
                if attempt is not None:
                    self._dispatch(Aborted(attempt, code, str(exc)))
                    return  # the rest of this batch belonged to the aborted attempt
                self._emit(Emit(pb.EVENT_KIND_ERROR, error=LastError(code, str(exc))))

    def _run_action(self, action: Action) -> None:
        if isinstance(action, RequestChunks):
            request = pb.ArtifactChunkRequest(
                schema_version=SCHEMA_VERSION,
                device_id=self.device_id,
                request_id=action.request_id,
                sha256=action.sha256,
                indexes=action.indexes,
            )
            self._publish(Channel.ARTIFACT_REQUEST, request)
        elif isinstance(action, WriteChunk):
            self.store.write_chunk(action.sha256, action.index, action.offset, action.data)
        elif isinstance(action, Emit):
            self._emit(action)
        elif isinstance(action, Report):
            self._report()
        elif isinstance(action, SaveJournal):
            self.store.save_journal(action.journal)
        elif isinstance(action, BeginDownload):
            self.store.begin_download(action.sha256, action.size_bytes)
        elif isinstance(action, DiscardDownload):
            self.store.discard_download(action.sha256)
        elif isinstance(action, CommitDownload):
            self.store.commit_download(action.sha256)
        elif isinstance(action, PruneModels):
            self.store.prune_models(action.keep)
        elif isinstance(action, VerifyArtifact):
            self._jobs.submit(lambda: self._post(jobs.verify_artifact(self.store, action)))
        elif isinstance(action, LoadModel):
            self._jobs.submit(lambda: self._post(jobs.load_model(self._load_model, action)))
        elif isinstance(action, RunSelfTest):
            self._jobs.submit(lambda: self._post(jobs.run_self_test(self._run_self_test, action)))
        elif isinstance(action, Activate):
            new = ServingModel.of(action.model, action.installed)
            self._flush_telemetry(new)  # the window so far belongs to the old model
            self._slot.swap(new)
        else:  # pragma: no cover - the updater returns only the actions above
            raise TypeError(f"unknown action {action!r}")

    # ------------------------------------------------------------------------------------------ output

    def _publish(self, channel: Channel, message: Message) -> None:
        spec = channel.spec
        try:
            self.transport.publish(
                device_topic(self.device_id, channel), message.SerializeToString(), qos=spec.qos, retain=spec.retain
            )
        except TransportError as exc:
            log.warning("agent %s: cannot publish on %s: %s", self.device_id, channel.value, exc)

    def _emit(self, action: Emit) -> None:
        event = lifecycle_event(
            action.kind,
            device_id=self.device_id,
            seq=self._seq.next(),
            ts_ms=self.clock.now().wall_ms,
            deployment_id=action.deployment_id,
            model=action.model,
            error=action.error,
        )
        self._publish(Channel.EVENTS, event)

    def _report(self) -> None:
        assert self._updater is not None
        state = reported_state(
            self._updater.view(),
            device_id=self.device_id,
            seq=self._seq.next(),
            ts_ms=self.clock.now().wall_ms,
            labels=dict(self.settings.labels),
            runtimes=self.runtimes,
        )
        with self._changed:
            self._reported = state
            self._changed.notify_all()
        self._publish(Channel.REPORTED, state)

    def _flush_telemetry(self, next_serving: ServingModel | None) -> pb.TelemetryWindow | None:
        with self._flush_lock:
            window = self._telemetry.close_window(self.clock.now().wall_ms, self._seq.next(), next_serving)
            if window is None:
                return None
            self._publish(Channel.TELEMETRY, window)
            batch = self._sampler.drain(self.device_id, self._seq.next())
            if batch is not None:
                self._publish(Channel.SAMPLES, batch)
            return window

    # ------------------------------------------------------------------------------------------ journal

    def _load_journal(self) -> tuple[Journal, list[LastError]]:
        try:
            return self.store.load_journal() or Journal(), []
        except StoreError as exc:
            log.error("agent %s: starting without a journal: %s", self.device_id, exc)
            return Journal(), [LastError(exc.code, f"journal unreadable, starting afresh: {exc}")]

    def _resume_download(self, journal: Journal) -> tuple[Journal, set[int]]:
        """The chunks already downloaded for the pending update, squaring the journal with the disk after a
        crash between two steps (a download committed but not yet journalled, or a partial file lost)."""
        pending = journal.pending
        if pending is None or pending.layout is None:
            return journal, set()
        sha256 = pending.layout.sha256
        try:
            if self.store.has_download(sha256):
                return journal, self.store.received_chunks(sha256)
            if self.store.has_model(sha256):  # committed: verify it from the models
                journal = journal.with_(pending=replace(pending, layout=None))
                self._save_journal(journal)
                return journal, set()
            self.store.begin_download(sha256, pending.layout.size_bytes)
        except StoreError as exc:
            log.error("agent %s: cannot resume the download of %s: %s", self.device_id, sha256[:12], exc)
        return journal, set()

    def _save_journal(self, journal: Journal) -> None:
        try:
            self.store.save_journal(journal)
        except StoreError as exc:
            log.error("agent %s: cannot save the journal: %s", self.device_id, exc)

    @property
    def update_state(self) -> State:
        return self._updater.state if self._updater else State.IDLE


def _as_rows(x: Any) -> np.ndarray:
    try:
        rows = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"input is not numeric: {exc}") from None
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    if rows.ndim != 2:
        raise BadInputError(f"expected one row or a 2-D batch of rows, got an array of shape {rows.shape}")
    return rows
