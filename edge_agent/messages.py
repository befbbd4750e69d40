"""Builders for the protobuf messages the agent sends (pure), and its sequence numbers."""

from __future__ import annotations

import itertools
import threading

from edge_agent.transport import Will
from edge_agent.update.journal import InstalledModel, LastError
from edge_agent.update.machine import UpdaterView
from protocols import SCHEMA_VERSION
from protocols.capabilities import AGENT_CAPABILITIES
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

AGENT_VERSION = "0.1.0"


class SeqCounter:
    """Increasing sequence numbers that stay increasing across restarts without a write per message:
    the journal's boot count (bumped once per start) is the high 32 bits, a counter the low ones."""

    def __init__(self, boot_count: int) -> None:
        self._base = boot_count << 32
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return self._base + next(self._counter)


def model_ref(model: InstalledModel | None) -> pb.ModelRef | None:
    return None if model is None else model.ref()


def error_info(error: LastError | None) -> pb.ErrorInfo | None:
    return None if error is None else pb.ErrorInfo(code=error.code, message=error.message)


def presence(device_id: str, online: bool, ts_ms: int) -> pb.Presence:
    return pb.Presence(
        schema_version=SCHEMA_VERSION, device_id=device_id, online=online, ts_ms=ts_ms, agent_version=AGENT_VERSION
    )


def offline_will(device_id: str, *, fleet: str, ts_ms: int = 0) -> Will:
    """The last will to give the transport: the broker publishes it (retained) when the agent vanishes."""
    payload = presence(device_id, online=False, ts_ms=ts_ms).SerializeToString()
    spec = Channel.PRESENCE.spec
    return Will(device_topic(device_id, Channel.PRESENCE, fleet=fleet), payload, qos=spec.qos, retain=spec.retain)


def reported_state(
    view: UpdaterView,
    *,
    device_id: str,
    seq: int,
    ts_ms: int,
    labels: dict[str, str],
    runtimes: list[str],
) -> pb.ReportedState:
    state = pb.ReportedState(
        schema_version=SCHEMA_VERSION,
        device_id=device_id,
        seq=seq,
        ts_ms=ts_ms,
        update_state=view.state.wire,
        deployment_id=view.deployment_id,
        desired_generation=view.desired_generation,
        agent_version=AGENT_VERSION,
        labels=labels,
        runtimes=runtimes,
        probation_until_ms=view.probation_until_ms,
        capabilities=AGENT_CAPABILITIES,
    )
    for field, value in (
        ("active_model", model_ref(view.active)),
        ("previous_model", model_ref(view.previous)),
        ("last_error", error_info(view.last_error)),
    ):
        if value is not None:
            getattr(state, field).CopyFrom(value)
    return state


def lifecycle_event(
    kind: pb.EventKind,
    *,
    device_id: str,
    seq: int,
    ts_ms: int,
    deployment_id: str = "",
    model: InstalledModel | None = None,
    error: LastError | None = None,
) -> pb.LifecycleEvent:
    event = pb.LifecycleEvent(
        schema_version=SCHEMA_VERSION, device_id=device_id, seq=seq, ts_ms=ts_ms, kind=kind, deployment_id=deployment_id
    )
    ref, info = model_ref(model), error_info(error)
    if ref is not None:
        event.model.CopyFrom(ref)
    if info is not None:
        event.error.CopyFrom(info)
    return event
