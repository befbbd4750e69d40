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
from itertools import groupby
from typing import Any, Protocol

from sqlalchemy import Table, bindparam, update
from sqlalchemy import select as select_rows
from sqlmodel import Session, col, select

from cloud.db import among, fetch_or_raise, insert_ignore
from cloud.db.tables import Device
from cloud.types import ClockMs, now_ms
from protocols.topics import validate_device_id
from protocols.v1 import messages_pb2 as pb

_IN_BATCH = 500  # ids per IN (...) query: well inside every database's parameter limit
_DEVICE_TABLE: Table = Device.__table__  # type: ignore[attr-defined]


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
        query = select(Device).where(among(session, col(Device.id), ids[start : start + _IN_BATCH]))
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


class Row(Protocol):
    """A device row's current values by column name: a dict read by ingestion, or a Device (`values_of`)."""

    def __getitem__(self, column: str) -> Any: ...


class values_of:  # noqa: N801 - reads as a function
    """A Device as a Row."""

    def __init__(self, device: Device) -> None:
        self._device = device

    def __getitem__(self, column: str) -> Any:
        return getattr(self._device, column)


# The rules below say what a message changes on a device row: a dict of the columns whose value differs (what
# ingestion writes in bulk, and what apply_* set on an ORM row for everyone else).


def reported_changes(
    row: Row, report: pb.ReportedState, *, clock: ClockMs = now_ms, enrolled_labels: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], bool] | None:
    """(the changed columns, whether its labels changed or this is its first report) of a snapshot applied to
    row, or None when the snapshot is older than the one applied and changes nothing."""
    if report.ts_ms and report.ts_ms < row["reported_ts_ms"]:
        return None
    labels_changed = row["reported_ts_ms"] == 0 and row["reported_seq"] == 0  # a first report: check it against
    new: dict[str, Any] = {  # label deployments
        "reported_seq": report.seq, "reported_ts_ms": report.ts_ms,
        "last_seen_ms": _seen(row["last_seen_ms"], report.ts_ms, clock),
    }  # fmt: skip
    if report.labels:
        labels = {**dict(report.labels), **(enrolled_labels or {})}
        if labels != row["labels"]:
            new["labels"] = labels
            labels_changed = True
    if report.agent_version:
        new["agent_version"] = report.agent_version
    new["runtimes"] = list(report.runtimes)
    new["capabilities"] = list(report.capabilities)  # an agent downgraded to one that names none: none
    if report.HasField("facts"):  # an older agent sends none: keep what is known
        new["facts"] = facts_of(report.facts)
    active = report.active_model  # an unset submessage reads as empty strings and zeros
    new["active_model_id"] = active.model_id or None
    new["active_version"] = active.version or None
    new["active_sequence"] = active.sequence or None
    new["active_artifact_sha256"] = active.artifact_sha256 or None
    new["update_state"] = update_state_name(report.update_state)
    new["last_error_code"] = report.last_error.code or None
    new["last_error_message"] = report.last_error.message or None
    new["reported_generation"] = report.desired_generation
    return _changed(row, new), labels_changed


def presence_changes(row: Row, presence: pb.Presence, *, clock: ClockMs = now_ms) -> dict[str, Any]:
    """The columns an online/offline message changes."""
    new: dict[str, Any] = {"online": presence.online, "last_seen_ms": _seen(row["last_seen_ms"], presence.ts_ms, clock)}
    if presence.agent_version:
        new["agent_version"] = presence.agent_version
    return _changed(row, new)


def spool_drop_changes(row: Row, window: pb.TelemetryWindow) -> dict[str, Any]:
    """The newest spool drop totals a telemetry window carries (by window end: windows arrive out of order
    after an outage), as changed columns ({} when it carries none or older ones)."""
    if not window.HasField("spool_dropped") or window.window_end_ms < int(row["spool_dropped"].get("as_of_ms", 0)):
        return {}
    drops = window.spool_dropped
    spool_dropped = {
        "events": drops.events, "telemetry": drops.telemetry, "samples": drops.samples,
        "as_of_ms": window.window_end_ms,
    }  # fmt: skip
    return _changed(row, {"spool_dropped": spool_dropped})


def _changed(row: Row, new: dict[str, Any]) -> dict[str, Any]:
    return {column: value for column, value in new.items() if row[column] != value}


def _set(device: Device, changes: Mapping[str, Any]) -> None:
    for column, value in changes.items():
        setattr(device, column, value)


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
    `device`: the row, already read in this session; else it is read, or created, here."""
    device, created = (device, False) if device is not None else ensure_device(session, device_id, clock=clock)
    result = reported_changes(values_of(device), report, clock=clock, enrolled_labels=enrolled_labels)
    if result is None:
        return DeviceChange(device, created, labels_changed=False, applied=False)
    changes, labels_changed = result
    _set(device, changes)
    session.add(device)
    return DeviceChange(device, created, labels_changed or created, applied=True)


def apply_spool_drops(session: Session, device_id: str, window: pb.TelemetryWindow) -> bool:
    """Keep the newest spool drop totals a telemetry window carries; True if the device row changed."""
    if not window.HasField("spool_dropped"):
        return False
    device, _ = ensure_device(session, device_id)
    changes = spool_drop_changes(values_of(device), window)
    _set(device, changes)
    session.add(device)
    return bool(changes)


def apply_presence(
    session: Session, device_id: str, presence: pb.Presence, *, clock: ClockMs = now_ms, device: Device | None = None
) -> DeviceChange:
    """Apply an online/offline message; `device` as for `apply_reported`."""
    device, created = (device, False) if device is not None else ensure_device(session, device_id, clock=clock)
    _set(device, presence_changes(values_of(device), presence, clock=clock))
    session.add(device)
    return DeviceChange(device, created, labels_changed=created, applied=True)


def _seen(last_seen_ms: int | None, ts_ms: int, clock: ClockMs) -> int:
    # device clocks drift: never let a device claim to have been seen in the future
    seen = min(ts_ms, clock()) if ts_ms else clock()
    return max(last_seen_ms or 0, seen)


def read_device_rows(session: Session, device_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The rows of those of device_ids that have one, as plain dicts (no ORM objects: ingestion reads and
    writes hundreds a batch), in a query per 500 ids."""
    ids = list(dict.fromkeys(device_ids))
    table = _DEVICE_TABLE
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), _IN_BATCH):
        query = select_rows(table).where(among(session, table.c.id, ids[start : start + _IN_BATCH]))
        found.update((row.id, dict(row._mapping)) for row in session.execute(query))
    return found


def write_device_rows(session: Session, changes: Mapping[str, Mapping[str, Any]]) -> None:
    """UPDATE each device's changed columns (device id -> {column: value}) in id order, the devices that change
    the same columns one after another in one executemany: every row is locked in one global order (two
    ingestion workers never deadlock), and only what changed is written (an operator's concurrent relabel of
    a device whose labels a batch leaves alone survives)."""
    table = _DEVICE_TABLE
    ordered = [(device_id, changes[device_id]) for device_id in sorted(changes) if changes[device_id]]
    for columns, group in groupby(ordered, key=lambda item: tuple(sorted(item[1]))):
        statement = update(table).where(table.c.id == bindparam("device_id"))
        statement = statement.values({column: bindparam(f"new_{column}") for column in columns})
        rows = [{"device_id": device_id, **{f"new_{c}": values[c] for c in columns}} for device_id, values in group]
        session.execute(statement, rows)


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
