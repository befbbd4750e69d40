"""The fleet: devices as the cloud knows them (registration, labels, presence, reported state), as plain
functions over a Session. What devices *send* is turned into rows by `cloud.monitoring.ingest`; what they
are *told* is decided by `cloud.rollout`.
"""

from cloud.fleet.devices import (
    DeviceChange,
    apply_presence,
    apply_reported,
    apply_spool_drops,
    enroll_row,
    ensure_device,
    get_device,
    labels_match,
    list_devices,
    mark_all_offline,
    mark_revoked,
    presence_changes,
    read_device_rows,
    read_devices,
    reported_changes,
    spool_drop_changes,
    update_state_name,
    write_device_rows,
)

__all__ = [
    "DeviceChange",
    "apply_presence",
    "apply_reported",
    "apply_spool_drops",
    "enroll_row",
    "ensure_device",
    "get_device",
    "labels_match",
    "list_devices",
    "mark_all_offline",
    "mark_revoked",
    "presence_changes",
    "read_device_rows",
    "read_devices",
    "reported_changes",
    "spool_drop_changes",
    "update_state_name",
    "write_device_rows",
]
