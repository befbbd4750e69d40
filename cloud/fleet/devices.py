"""Fleet state: devices, their labels, presence and reported state (functions over a Session).

Devices do not register themselves: a row comes from enrollment (`enroll_row`, called when a token is
redeemed) or from an operator deploying to an id ahead of its enrollment; ingestion applies reports only
for enrolled devices (`cloud.monitoring.ingest`). The labels an enrollment fixed win over the ones a device
reports, so a device cannot label itself into a deployment.

ReportedState is a full snapshot, applied unless it is older than the one already applied (retained
replays and redeliveries arrive out of order). Presence is applied in arrival order: the broker publishes
a device's last will (written when it connected, so with an old timestamp) after its online message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from cloud.db import fetch_or_raise, insert_ignore
from cloud.db.tables import Device
from cloud.types import ClockMs, now_ms
from protocols.topics import validate_device_id
from protocols.v1 import messages_pb2 as pb

_IN_BATCH = 500  # ids per IN (...) query: well inside every database's parameter limit


def update_state_name(value: int) -> str:
    """UpdateState enum value -> "active", "failed", ... ("unknown" for values this build does not know)."""
    try:
        return pb.UpdateState.Name(value).removeprefix("UPDATE_STATE_").lower()  # type: ignore[arg-type]
    except ValueError:
        return "unknown"


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """True when every selector label is present with the same value (an empty selector matches nothing)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def get_device(session: Session, device_id: str) -> Device:
    return fetch_or_raise(session, Device, device_id, missing=f"no device {device_id}")


def list_devices(
    session: Session, *, labels: Mapping[str, str] | None = None, online: bool | None = None,
    after: str | None = None, limit: int | None = None,
) -> list[Device]:
    """The matching devices in id order; with `after` only ids after it, with `limit` at most that many
    (read `limit` rows at a time: labels are matched here, not in SQL, so a batch may keep fewer)."""
    query = select(Device).order_by(col(Device.id))
    if online is not None:
        query = query.where(Device.online == online)
    devices: list[Device] = []
    while True:
        batch = list(session.exec((query if after is None else query.where(col(Device.id) > after)).limit(limit)))
        devices += [d for d in batch if not labels or labels_match(labels, d.labels)]
        if limit is None or len(batch) < limit or len(devices) >= limit:
            return devices[:limit]
        after = batch[-1].id


def ensure_device(session: Session, device_id: str, *, clock: ClockMs = now_ms) -> tuple[Device, bool]:
    """The device's row, created if missing (race-free across workers). Returns (device, created)."""
    validate_device_id(device_id)
    created = insert_ignore(session, Device, [{"id": device_id, "registered_at_ms": clock()}], ["id"]) > 0
    device = session.get(Device, device_id, populate_existing=True)
    assert device is not None
    return device, created


def read_devices(session: Session, device_ids: Iterable[str]) -> dict[str, Device]:
    """The rows of those of device_ids that have one, read fresh, in a query per 500 ids."""
    ids = list(dict.fromkeys(device_ids))
    found: dict[str, Device] = {}
    for start in range(0, len(ids), _IN_BATCH):
        query = select(Device).where(col(Device.id).in_(ids[start : start + _IN_BATCH]))
        found.update((device.id, device) for device in session.exec(query.execution_options(populate_existing=True)))
    return found


def enroll_row(session: Session, device_id: str, labels: Mapping[str, str], *, clock: ClockMs = now_ms) -> Device:
    """The row of a device being enrolled, created if missing, carrying the enrollment's labels."""
    device, _ = ensure_device(session, device_id, clock=clock)
    device.labels = {**device.labels, **labels}
    session.add(device)
    return device


def mark_revoked(session: Session, device_id: str) -> None:
    """A revoked device is offline from the cloud's view: its broker drops it without its will, and the
    cloud ignores whatever it still sends, so nothing else would ever say so."""
    device = session.get(Device, device_id)
    if device is not None and device.online:
        device.online = False
        session.add(device)


def mark_all_offline(session: Session) -> int:
    """Every device offline, until its next presence says otherwise; returns how many were online.

    For a broker that has just started empty (the embedded one keeps no sessions, wills or retained messages
    across a restart): a device that died while it was down has no will left to say so, and one that is alive
    reconnects and says it is online."""
    online = list(session.exec(select(Device).where(col(Device.online).is_(True))))
    for device in online:
        device.online = False
        session.add(device)
    return len(online)


@dataclass(frozen=True)
class DeviceChange:
    device: Device
    created: bool
    labels_changed: bool
    applied: bool  # False when the message was stale and left the row as it was


def apply_reported(
    session: Session,
    device_id: str,
    report: pb.ReportedState,
    *,
    clock: ClockMs = now_ms,
    enrolled_labels: Mapping[str, str] | None = None,
    device: Device | None = None,
) -> DeviceChange:
    """Apply a snapshot; `enrolled_labels` (fixed at enrollment) override the device's own label values.
    `device`: the row, already read in this session (ingestion reads a batch's rows at once); else it is
    read, or created, here."""
    device, created = (device, False) if device is not None else ensure_device(session, device_id, clock=clock)
    if report.ts_ms and report.ts_ms < device.reported_ts_ms:
        return DeviceChange(device, created, labels_changed=False, applied=False)
    first_report = device.reported_ts_ms == 0 and device.reported_seq == 0
    device.reported_seq = report.seq
    device.reported_ts_ms = report.ts_ms
    _saw(device, report.ts_ms, clock)
    labels_changed = first_report  # a device's first report: check it against label deployments
    if report.labels:
        labels = {**dict(report.labels), **(enrolled_labels or {})}
        if labels != device.labels:
            device.labels = labels
            labels_changed = True
    if report.agent_version:
        device.agent_version = report.agent_version
    device.runtimes = list(report.runtimes)
    device.capabilities = list(report.capabilities)  # an agent downgraded to one that names none: none
    if report.HasField("facts"):  # an older agent sends none: keep what is known
        device.facts = facts_of(report.facts)
    active = report.active_model  # an unset submessage reads as empty strings and zeros
    device.active_model_id = active.model_id or None
    device.active_version = active.version or None
    device.active_sequence = active.sequence or None
    device.active_artifact_sha256 = active.artifact_sha256 or None
    device.update_state = update_state_name(report.update_state)
    device.last_error_code = report.last_error.code or None
    device.last_error_message = report.last_error.message or None
    device.reported_generation = report.desired_generation
    session.add(device)
    return DeviceChange(device, created, labels_changed or created, applied=True)


def apply_spool_drops(session: Session, device_id: str, window: pb.TelemetryWindow) -> bool:
    """Keep the newest spool drop totals a telemetry window carries (by window end: windows arrive out of
    order after an outage); True if the device row changed."""
    if not window.HasField("spool_dropped"):
        return False
    device, _ = ensure_device(session, device_id)
    if window.window_end_ms < int(device.spool_dropped.get("as_of_ms", 0)):
        return False
    drops = window.spool_dropped
    device.spool_dropped = {
        "events": drops.events, "telemetry": drops.telemetry, "samples": drops.samples,
        "as_of_ms": window.window_end_ms,
    }  # fmt: skip
    session.add(device)
    return True


def apply_presence(
    session: Session, device_id: str, presence: pb.Presence, *, clock: ClockMs = now_ms, device: Device | None = None
) -> DeviceChange:
    """Apply an online/offline message; `device` as for `apply_reported`."""
    device, created = (device, False) if device is not None else ensure_device(session, device_id, clock=clock)
    device.online = presence.online
    if presence.agent_version:
        device.agent_version = presence.agent_version
    _saw(device, presence.ts_ms, clock)
    session.add(device)
    return DeviceChange(device, created, labels_changed=created, applied=True)


def _saw(device: Device, ts_ms: int, clock: ClockMs) -> None:
    # device clocks drift: never let a device claim to have been seen in the future
    seen = min(ts_ms, clock()) if ts_ms else clock()
    device.last_seen_ms = max(device.last_seen_ms or 0, seen)


def facts_of(facts: pb.DeviceFacts) -> dict[str, Any]:
    """DeviceFacts as the JSON the API shows: numbers stay numbers, fields the device could not read are left out."""
    found: dict[str, Any] = {
        "architecture": facts.architecture,
        "os": facts.os,
        "python_version": facts.python_version,
        "runtimes": {r.name: r.version for r in facts.runtimes},
        "cpu_count": facts.cpu_count,
        "cpu_model": facts.cpu_model,
        "memory_total_bytes": facts.memory_total_bytes,
        "memory_available_bytes": facts.memory_available_bytes,
        "throttled": facts.throttled,
        "disk_free_bytes": facts.disk_free_bytes,
    }
    if facts.HasField("temperature_c"):
        found["temperature_c"] = round(facts.temperature_c, 1)
    return {k: v for k, v in found.items() if v not in ("", 0, {})}
