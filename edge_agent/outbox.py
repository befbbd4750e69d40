"""Everything the agent says upward: lifecycle events, the reported state, telemetry windows and samples.

One `Outbox` per agent owns the sequence counter all of them share, the last ReportedState (which
`Agent.status()` and `Agent.wait_for()` read under `changed`), and the telemetry window being filled.
A publish that fails is logged, never raised: the agent keeps serving while the link is down, and QoS 1
messages queue in the transport until it is back (on disk: `edge_agent.paho_spool`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

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
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, device_id: str, fleet: str, transport: Transport, clock: Clock, sampler: Sampler) -> None:
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

    def publish(self, channel: Channel, message: Message) -> None:
        spec = channel.spec
        try:
            topic = device_topic(self.device_id, channel, fleet=self.fleet)
            self.transport.publish(topic, message.SerializeToString(), qos=spec.qos, retain=spec.retain)
        except TransportError as exc:
            log.warning("agent %s: cannot publish on %s: %s", self.device_id, channel.value, exc)

    def emit(self, action: Emit) -> None:
        event = lifecycle_event(
            action.kind,
            device_id=self.device_id,
            seq=self.seq.next(),
            ts_ms=self.clock.now().wall_ms,
            deployment_id=action.deployment_id,
            model=action.model,
            error=action.error,
        )
        self.publish(Channel.EVENTS, event)

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
        self.publish(Channel.REPORTED, state)

    def reported(self) -> pb.ReportedState:
        """The last ReportedState (a copy)."""
        with self.changed:
            state = pb.ReportedState()
            state.CopyFrom(self._reported)
            return state

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
