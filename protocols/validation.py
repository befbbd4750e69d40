"""What a device -> cloud message must *mean* before the cloud stores it (parsing is not enough).

Every rule here is part of the contract: a device that keeps them is never refused, and a message that
breaks one is refused whole, counted, and never stored (so it cannot skew a dashboard or freeze the cloud's
view of a device). Pure functions; `check_upward(message, now_ms)` raises ImplausibleMessage naming the rule.

For every message, walked field by field:
    integers fit the database's signed 64-bit columns       (uint64 above 2**63 - 1 is refused)
    floats are finite                                        (NaN and inf only where a rule allows: sample inputs)
    strings hold no NUL and at most MAX_STRING characters    (PostgreSQL text cannot hold NUL)
    repeated fields hold at most MAX_REPEATED entries
Per message:
    timestamps at most FUTURE_SKEW_MS ahead of the cloud's clock (a device clock far ahead would otherwise
    make every later, honest report look stale)
    TelemetryWindow: start <= end, window at most MAX_WINDOW_MS long, errors <= inferences,
                     correct <= labelled <= inferences, shadow agreed <= compared, p50 <= p95 latency,
                     0 <= cpu% <= MAX_CPU_PERCENT
    LifecycleEvent: at most MAX_EVENT_BATCH events in `batch`, none carrying a batch of its own
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from protocols.v1 import messages_pb2 as pb

INT64_MAX = 2**63 - 1
FUTURE_SKEW_MS = 5 * 60_000  # devices sync by NTP; five minutes covers a drifting RTC between syncs
MAX_WINDOW_MS = 24 * 3_600_000
MAX_STRING = 4_096
MAX_REPEATED = 100_000
MAX_CPU_PERCENT = 100.0 * 256  # all cores of the largest board busy
# below this a sample's weight 1 / p is no longer a finite float (5e-324 -> inf), and no sampler keeps one row
# in 1e12; 0 stays "unknown" (older agents)
MIN_INCLUSION_PROBABILITY = 1e-12
MAX_EVENT_BATCH = 256  # events one LifecycleEvent carries in `batch`; an agent sends a few per update


class ImplausibleMessage(ValueError):
    """A message that parses but cannot be true; `rule` names the broken rule (for counters and logs)."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule


_INTEGER_TYPES = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}
_FLOAT_TYPES = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
# fields whose floats may be NaN (a missing input value) or infinite (what a device was given)
_NON_FINITE_ALLOWED = {"edgefleet.v1.Sample.input"}


# what each field needs checked, decided once per field (validation runs on every message the cloud takes in)
_NOTHING, _MAP, _MESSAGE, _TEXT, _UINT64, _FLOAT = range(6)
_KINDS: dict[FieldDescriptor, int] = {}


def _kind(field: FieldDescriptor) -> int:
    kind = _KINDS.get(field)
    if kind is None:
        if field.message_type is not None:
            kind = _MAP if field.message_type.GetOptions().map_entry else _MESSAGE
        elif field.type == FieldDescriptor.TYPE_STRING:
            kind = _TEXT
        elif field.type in _INTEGER_TYPES:
            kind = _UINT64
        elif field.type in _FLOAT_TYPES and field.full_name not in _NON_FINITE_ALLOWED:
            kind = _FLOAT
        else:
            kind = _NOTHING  # int32, uint32, bool, enum, bytes: nothing to refuse
        _KINDS[field] = kind
    return kind


def _check_fields(message: Message, path: str) -> None:
    for field, value in message.ListFields():
        kind = _kind(field)
        if kind == _MAP:
            where = f"{path}.{field.name}"
            _check_count(len(value), where)
            key_field, value_field = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            for key in value:
                _check_value(key_field, key, where)
                _check_value(value_field, value[key], where)
        elif field.is_repeated:
            if len(value) > MAX_REPEATED:
                _check_count(len(value), f"{path}.{field.name}")
            if kind == _MESSAGE:
                where = f"{path}.{field.name}"
                for item in value:
                    _check_fields(item, where)
            elif kind != _NOTHING and value and _suspect_values(kind, value):
                for item in value:  # name the culprit
                    _check_value(field, item, f"{path}.{field.name}")
        elif kind == _MESSAGE:
            _check_fields(value, f"{path}.{field.name}")
        elif kind != _NOTHING and _suspect_values(kind, (value,)):
            _check_value(field, value, f"{path}.{field.name}")


def _suspect_values(kind: int, values: Any) -> bool:
    """Whether any of a field's values breaks a rule (cheap; _check_value then says which and why)."""
    if kind == _TEXT:
        return any("\x00" in text or len(text) > MAX_STRING for text in values)
    if kind == _UINT64:
        return bool(max(values) > INT64_MAX)
    return not all(map(math.isfinite, values))  # _FLOAT


def _check_count(count: int, where: str) -> None:
    if count > MAX_REPEATED:
        raise ImplausibleMessage("too_many_entries", f"{where} has {count} entries")


def _check_value(field: FieldDescriptor, item: object, where: str) -> None:
    if isinstance(item, Message):
        _check_fields(item, where)
    elif isinstance(item, str):
        _check_scalar_text(item, where)
    elif field.type in _INTEGER_TYPES and isinstance(item, int) and item > INT64_MAX:
        raise ImplausibleMessage("out_of_range", f"{where} = {item} does not fit a signed 64-bit column")
    elif (
        field.type in _FLOAT_TYPES
        and isinstance(item, float)
        and not math.isfinite(item)
        and field.full_name not in _NON_FINITE_ALLOWED
    ):
        raise ImplausibleMessage("not_finite", f"{where} = {item}")


def _check_scalar_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise ImplausibleMessage("nul_in_text", f"{where} contains a NUL character")
    if len(text) > MAX_STRING:
        raise ImplausibleMessage("text_too_long", f"{where} has {len(text)} characters (at most {MAX_STRING})")


def _check_not_future(ts_ms: int, now_ms: int, what: str) -> None:
    if ts_ms > now_ms + FUTURE_SKEW_MS:
        raise ImplausibleMessage(
            "from_the_future", f"{what} {ts_ms} is {(ts_ms - now_ms) / 1000:.0f} s ahead of the cloud's clock"
        )


def _check_window(window: pb.TelemetryWindow, now_ms: int) -> None:
    start, end = window.window_start_ms, window.window_end_ms
    if end < start:
        raise ImplausibleMessage("window_ends_before_start", f"window {start}..{end}")
    if end - start > MAX_WINDOW_MS:
        raise ImplausibleMessage("window_too_long", f"window of {(end - start) / 3_600_000:.1f} h")
    _check_not_future(end, now_ms, "window end")
    if window.error_count > window.inference_count:
        raise ImplausibleMessage(
            "counts_contradict", f"{window.error_count} errors > {window.inference_count} inferences"
        )
    if not window.correct_count <= window.labelled_count <= window.inference_count:
        raise ImplausibleMessage(
            "counts_contradict",
            f"correct {window.correct_count}, labelled {window.labelled_count}, inferences {window.inference_count}",
        )
    if window.shadow_agreed > window.shadow_compared:
        raise ImplausibleMessage(
            "counts_contradict", f"{window.shadow_agreed} shadow rows agreed > {window.shadow_compared} compared"
        )
    if window.latency_p50_us < 0 or window.latency_p50_us > window.latency_p95_us:
        raise ImplausibleMessage(
            "latency_contradicts", f"p50 {window.latency_p50_us} us, p95 {window.latency_p95_us} us"
        )
    confident = sum(window.confidence_counts)
    if confident > window.inference_count:
        raise ImplausibleMessage("counts_contradict", f"{confident} confidence counts > {window.inference_count} rows")
    if window.label_counts:  # [rows counted, then rows with each label on]: none on more rows than counted
        counted, *positives = window.label_counts
        if counted > window.inference_count or any(p > counted for p in positives):
            raise ImplausibleMessage(
                "counts_contradict",
                f"label counts to {max(positives, default=0)} of {counted} rows, {window.inference_count} rows in all",
            )
    if not 0.0 <= window.cpu_percent <= MAX_CPU_PERCENT:
        raise ImplausibleMessage("out_of_range", f"cpu_percent = {window.cpu_percent}")


def _check_events(event: pb.LifecycleEvent, now_ms: int) -> None:
    """An event and those it carries (`batch`): at most MAX_EVENT_BATCH more, none nested again, none dated
    in the future."""
    if len(event.batch) > MAX_EVENT_BATCH:
        raise ImplausibleMessage("too_many_entries", f"{len(event.batch)} events batched (at most {MAX_EVENT_BATCH})")
    _check_not_future(event.ts_ms, now_ms, "timestamp")
    for more in event.batch:
        if more.batch:
            raise ImplausibleMessage("nested_batch", f"event seq {more.seq} of a batch carries a batch of its own")
        _check_not_future(more.ts_ms, now_ms, "timestamp")


def check_upward(message: Message, now_ms: int) -> None:
    """Raise ImplausibleMessage unless `message` (any device -> cloud payload) can be true at now_ms."""
    _check_fields(message, message.DESCRIPTOR.name)
    if isinstance(message, pb.TelemetryWindow):
        _check_window(message, now_ms)
    elif isinstance(message, pb.ReportedState | pb.Presence):
        _check_not_future(message.ts_ms, now_ms, "timestamp")
    elif isinstance(message, pb.LifecycleEvent):
        _check_events(message, now_ms)
    elif isinstance(message, pb.SampleBatch):
        for sample in message.samples:
            _check_not_future(sample.ts_ms, now_ms, "sample timestamp")
            p = sample.inclusion_probability
            if not (p == 0.0 or MIN_INCLUSION_PROBABILITY <= p <= 1.0) or not 0.0 <= sample.confidence <= 1.0:
                raise ImplausibleMessage(
                    "out_of_range",
                    f"sample inclusion_probability {sample.inclusion_probability}, confidence {sample.confidence}",
                )
    elif isinstance(message, pb.FeedbackBatch):
        for item in message.items:
            _check_not_future(item.ts_ms, now_ms, "feedback timestamp")
