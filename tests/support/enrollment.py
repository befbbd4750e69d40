"""Enroll devices in a test's cloud, as `edgefleet devices enroll` + `edgefleet-agent provision --token`
would (the cloud ignores every message from a device it has not enrolled).

    passwords = enroll(cloud_or_engine, "pi-01", "pi-02", labels={"site": "lab"})   # id -> broker password
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from cloud.identity.enrollment import enroll_device


def enroll(
    target: Any,
    *device_ids: str,
    labels: Mapping[str, str] | Callable[[str], Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """Enroll device_ids (committed) in target, an Engine or anything with `.engine` (a CloudService);
    labels: the same for all, or a function of the device id. Returns device id -> broker password."""
    engine: Engine = target if isinstance(target, Engine) else target.engine
    passwords = {}
    with Session(engine) as session:
        for device_id in device_ids:
            fixed = labels(device_id) if callable(labels) else labels
            passwords[device_id] = enroll_device(session, device_id, fixed).password
        session.commit()
    return passwords
