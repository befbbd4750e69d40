"""Everything the agent says upward: lifecycle events, the reported state, telemetry windows and samples.

One `Outbox` per agent owns the sequence counter all of them share, the last ReportedState (which
`Agent.status()` and `Agent.wait_for()` read under `changed`), and the telemetry window being filled.
A publish that fails is logged, never raised: the agent keeps serving while the link is down, and QoS 1
messages queue in the transport until it is back (on disk: `edge_agent.paho_spool`).

Fewer messages per update (each costs the broker, the cloud's ingestion and the device a publish and an
acknowledgement): a fast update sends two, its lifecycle events in one batch and its terminal report.
The reported state is a retained latest-value shadow, so an intermediate state (downloading, verifying,
loading, self_test) is held and superseded on the device by the next one; the latest held goes out
`hold_s` after the first held, so a slow update's progress is seen at most `hold_s` late (the first state
included: nothing in the cloud waits for it, see README "Fewer upward messages per update").
Terminal states (idle, active, failed) go at once, with the events held before them. Lifecycle events are
history: none is dropped, but while the cloud's last desired state names `event_batch`
(`protocols.capabilities`) they are held and travel together in one `LifecycleEvent.batch`, with the next
terminal report rather than with an intermediate one, at once for a failure, and at the latest
`event_hold_s` after the first of them (`send_due`, every step). A crash loses what is held.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message

from edge_agent.clock import Clock
from edge_agent.messages import SeqCounter, lifecycle_event, reported_state
from edge_agent.serving.sampler import Sampler
from edge_agent.serving.slot import ServingModel
from edge_agent.serving.telemetry import Telemetry
from edge_agent.transport import Transport, TransportError
from edge_agent.update.actions import Emit
from edge_agent.update.machine import UpdaterView
from protocols import SCHEMA_VERSION
from protocols.capabilities import EVENT_BATCH
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb
from protocols.validation import MAX_EVENT_BATCH

log = logging.getLogger(__name__)
T = TypeVar("T")

REPORT_HOLD_S = 1.0  # AgentSettings.report_hold_s: the longest an intermediate state waits
EVENT_HOLD_S = 10.0  # AgentSettings.event_hold_s: the longest a lifecycle event waits for a terminal report
_INTERMEDIATE = frozenset({pb.UPDATE_STATE_DOWNLOADING, pb.UPDATE_STATE_VERIFYING, pb.UPDATE_STATE_LOADING,
                           pb.UPDATE_STATE_SELF_TEST})  # fmt: skip
# events that say something went wrong: they travel at once, with any held before them
_FAILURES = frozenset({pb.EVENT_KIND_VERIFICATION_FAILED, pb.EVENT_KIND_SELF_TEST_FAILED, pb.EVENT_KIND_ROLLED_BACK,
                       pb.EVENT_KIND_ERROR})  # fmt: skip


class Outbox:
    def __init__(
        self,
        device_id: str,
        fleet: str,
        transport: Transport,
        clock: Clock,
        sampler: Sampler,
        hold_s: float = REPORT_HOLD_S,
        event_hold_s: float = EVENT_HOLD_S,
    ) -> None:
        self.device_id = device_id
        self.fleet = fleet
        self.transport = transport
        self.clock = clock
        self.seq = SeqCounter(0)
        self.telemetry = Telemetry(device_id, clock.now().wall_ms)
        self._sampler = sampler
        self._flush_lock = threading.Lock()
        # notified after every report (and every step of the agent's loop): wait_for() re-checks then
        self.changed = threading.Condition()
        self._reported = pb.ReportedState(
            schema_version=SCHEMA_VERSION, device_id=device_id, update_state=pb.UPDATE_STATE_IDLE
        )
        # what the cloud's last desired state said it reads (DesiredState.cloud_capabilities)
        self.cloud_capabilities: frozenset[str] = frozenset()
        self._hold_s = hold_s
        self._event_hold_s = event_hold_s
        self._held_lock = threading.Lock()  # the held messages: the agent's thread, and stop()'s
        self._held_report: pb.ReportedState | None = None
        self._held_events: list[pb.LifecycleEvent] = []
        # monotonic times by which the held report and the held events must go (None: none held); each is
        # bounded from the first message held, however many follow
        self._report_due_s: float | None = None
        self._events_due_s: float | None = None

    def publish(self, channel: Channel, message: Message) -> None:
        spec = channel.spec
        try:
            topic = device_topic(self.device_id, channel, fleet=self.fleet)
            self.transport.publish(topic, message.SerializeToString(), qos=spec.qos, retain=spec.retain)
        except TransportError as exc:
            log.warning("agent %s: cannot publish on %s: %s", self.device_id, channel.value, exc)

    def emit(self, action: Emit) -> None:
        now = self.clock.now()
        event = lifecycle_event(
            action.kind,
            device_id=self.device_id,
            seq=self.seq.next(),
            ts_ms=now.wall_ms,
            deployment_id=action.deployment_id,
            model=action.model,
            error=action.error,
        )
        if self._event_hold_s <= 0 or EVENT_BATCH not in self.cloud_capabilities:
            self.publish(Channel.EVENTS, event)  # an older cloud would store only a batch's first event
            return
        with self._held_lock:
            self._held_events.append(event)
            if self._events_due_s is None:
                self._events_due_s = now.mono_s + self._event_hold_s
            full = len(self._held_events) > MAX_EVENT_BATCH  # the cloud refuses a longer batch whole
        if full or action.kind in _FAILURES:  # the report held (if any) keeps its time: a failed one follows
            self._send(*self._take(events=True, report=False))

    def report(
        self, view: UpdaterView, labels: dict[str, str], runtimes: list[str], facts: pb.DeviceFacts | None = None
    ) -> None:
        state = reported_state(
            view,
            device_id=self.device_id,
            seq=self.seq.next(),
            ts_ms=self.clock.now().wall_ms,
            labels=labels,
            runtimes=runtimes,
        )
        if facts is not None:
            state.facts.CopyFrom(facts)
        with self.changed:
            self._reported = state
            self.changed.notify_all()
        with self._held_lock:
            self._held_report = state  # the latest state supersedes a held one, whatever update it was of
            intermediate = state.update_state in _INTERMEDIATE
            if intermediate and self._hold_s > 0:
                if self._report_due_s is None:
                    self._report_due_s = self.clock.now().mono_s + self._hold_s
                return
        # a terminal state: at once, with the events held before it; an intermediate one (no hold) alone
        self._send(*self._take(events=not intermediate, report=True))

    @property
    def due_s(self) -> float | None:
        """The monotonic time by which something held must go (`send_due`); None: nothing held."""
        dues = [due for due in (self._report_due_s, self._events_due_s) if due is not None]
        return min(dues, default=None)

    def send_due(self) -> None:
        """Send what is held once its time is up (the agent calls it every step): a report whose time is up
        goes alone, the events keep waiting for a terminal report until theirs is."""
        now_s = self.clock.now().mono_s
        if self.due_s is not None and now_s >= self.due_s:
            self._send(*self._take(events=self._is_due(self._events_due_s, now_s),
                                   report=self._is_due(self._report_due_s, now_s)))  # fmt: skip

    def send_held(self) -> None:
        """Send what is held now: the events (one message), then the latest report."""
        self._send(*self._take(events=True, report=True))

    @staticmethod
    def _is_due(due_s: float | None, now_s: float) -> bool:
        return due_s is not None and now_s >= due_s

    def _take(self, *, events: bool, report: bool) -> tuple[list[pb.LifecycleEvent], pb.ReportedState | None]:
        taken_events: list[pb.LifecycleEvent] = []
        taken_report = None
        with self._held_lock:
            if events:
                taken_events, self._held_events, self._events_due_s = self._held_events, [], None
            if report:
                taken_report, self._held_report, self._report_due_s = self._held_report, None, None
        return taken_events, taken_report

    def _send(self, events: list[pb.LifecycleEvent], report: pb.ReportedState | None) -> None:
        if events:
            first = events[0]
            for more in events[1:]:  # the first names the device and schema; the rest need not repeat it
                more.ClearField("schema_version")
                more.ClearField("device_id")
                first.batch.append(more)
            self.publish(Channel.EVENTS, first)
        if report is not None:
            self.publish(Channel.REPORTED, report)

    def reported(self) -> pb.ReportedState:
        """The last ReportedState (a copy)."""
        with self.changed:
            state = pb.ReportedState()
            state.CopyFrom(self._reported)
            return state

    def read_reported(self, read: Callable[[pb.ReportedState], T]) -> T:
        """read(the last ReportedState) in place, under the lock (read neither keeps nor changes it)."""
        with self.changed:
            return read(self._reported)

    def wait_for(self, predicate: Callable[[pb.ReportedState], bool], timeout_s: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self._reported), timeout_s)

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def flush_telemetry(self, next_serving: ServingModel | None) -> pb.TelemetryWindow | None:
        """Close the telemetry window (the next one belongs to next_serving) and publish it with its samples."""
        with self._flush_lock:
            window = self.telemetry.close_window(self.clock.now().wall_ms, self.seq.next(), next_serving)
            if window is None:
                return None
            drops = getattr(self.transport, "spool_drops", None)  # a disk spool's (edge_agent.paho_spool)
            if drops is not None and any((found := drops()).values()):
                window.spool_dropped.CopyFrom(pb.SpoolDrops(**found))
            self.publish(Channel.TELEMETRY, window)
            self._sampler.flag_bins(*self.telemetry.flagged, window.window_end_ms)
            batch = self._sampler.drain(self.device_id, self.seq.next(), window.window_end_ms)
            if batch is not None:
                self.publish(Channel.SAMPLES, batch)
            return window
