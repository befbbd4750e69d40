from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response
from pydantic import TypeAdapter
from sqlmodel import Session, col, select

from cloud import fleet, monitoring
from cloud.api import paging
from cloud.api.auth import api_router
from cloud.api.deps import SessionDep, cached_json
from cloud.db.bounds import MAX_SELECTOR_LABELS, check_selector
from cloud.db.tables import Device, DevicePublic, EventPublic, EventRecord
from cloud.errors import InvalidRequestError

router = api_router(prefix="/devices", tags=["devices"])
DEVICE_LIST = TypeAdapter(list[DevicePublic])
DEVICE = TypeAdapter(DevicePublic)
EVENT_LIST = TypeAdapter(list[EventPublic])
TELEMETRY = TypeAdapter(monitoring.TelemetrySummary)
MAX_EVENT_PAGE = 1000


def parse_labels(items: list[str]) -> dict[str, str]:
    """key=value filters as a selector, held to the same rules as a deployment's (cloud.db.bounds)."""
    if len(items) > MAX_SELECTOR_LABELS:
        raise InvalidRequestError(f"at most {MAX_SELECTOR_LABELS} label filters, not {len(items)}")
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequestError(f"label filters look like key=value, not {item!r}")
        labels[key] = value
    return check_selector(labels)


@router.get("", response_model=list[DevicePublic])
async def list_devices(
    request: Request,
    label: Annotated[list[str], Query(description="key=value; repeat to require several")] = [],  # noqa: B006
    online: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=paging.MAX_PAGE, description="devices per page")] = paging.DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(description="from the previous page's Link rel=next")] = None,
) -> Response:
    """Devices in id order, a page at a time: the next page's URL is in the `Link` header (cloud.api.paging)."""
    labels = parse_labels(label)
    after = paging.decode_cursor("devices", cursor, str)

    def read(session: Session) -> paging.Page[Device]:
        found = fleet.list_devices(session, labels=labels, online=online, after=after, limit=limit + 1)
        return paging.take_page(found, limit, lambda d: d.id)

    key = ("devices", tuple(sorted(labels.items())), online, limit, after)
    return await cached_json(request, key, read, DEVICE_LIST, listing="devices")


# a device's page reads these every few seconds: answered from the read cache like the lists (within
# api_read_cache_s of what devices report; the fast lane answers repeats before routing)
@router.get("/{device_id}", response_model=DevicePublic)
async def get_device(request: Request, device_id: str) -> Response:
    return await cached_json(request, ("device", device_id), lambda s: fleet.get_device(s, device_id), DEVICE)


@router.get("/{device_id}/events", response_model=list[EventPublic])
async def device_events(
    request: Request,
    device_id: str,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENT_PAGE)] = 100,
    cursor: Annotated[str | None, Query(description="from the previous page's Link rel=next")] = None,
) -> Response:
    """A device's events, newest first, a page at a time (older ones behind the `Link` header's next)."""
    before = paging.decode_cursor("events", cursor, int)

    def read(session: Session) -> paging.Page[EventRecord]:
        fleet.get_device(session, device_id)
        query = select(EventRecord).where(EventRecord.device_id == device_id).order_by(col(EventRecord.seq).desc())
        if before is not None:
            query = query.where(col(EventRecord.seq) < before)
        return paging.take_page(list(session.exec(query.limit(limit + 1))), limit, lambda e: e.seq)

    return await cached_json(request, ("device-events", device_id, limit, before), read, EVENT_LIST, listing="events")


@router.get("/{device_id}/telemetry", response_model=monitoring.TelemetrySummary)
async def device_telemetry(request: Request, device_id: str, since_ms: int | None = None) -> Response:
    def read(session: Session) -> monitoring.TelemetrySummary:
        fleet.get_device(session, device_id)
        return monitoring.telemetry_summary(session, device_id, since_ms=since_ms)

    return await cached_json(request, ("device-telemetry", device_id, since_ms), read, TELEMETRY)


@router.get("/{device_id}/drift", response_model=monitoring.DriftReport)
def device_drift(
    session: SessionDep,
    device_id: str,
    model_id: str | None = None,
    version: str | None = None,
    since_ms: int | None = None,
) -> monitoring.DriftReport:
    return monitoring.device_drift(session, device_id, model_id=model_id, version=version, since_ms=since_ms)
