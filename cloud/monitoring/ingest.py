"""Ingestion: device->cloud messages become rows, idempotently and in batches.

TelemetryWindow, LifecycleEvent and SampleBatch are keyed by (device_id, seq) and inserted with
insert-or-ignore, so QoS 1 redeliveries, retained replays and several workers on a shared subscription
never double-count. ReportedState and Presence update the Device row and move deployment targets along.
Nothing is stored for a device without live (enrolled, unrevoked) credentials: its messages are dropped and
counted as `unenrolled` (one query per batch decides), so messages alone never create a device. Every
decoded message must also mean something possible (`protocols.validation.check_upward`: ranges, counts that
agree, no timestamp from the future); one that does not is dropped whole and counted as `implausible`, per
rule in `Ingestor.implausible_rules`, and logged once per rule. Work happens on a BatchWorker thread, one
transaction per batch; if a batch fails, its messages are retried one by one so one poison message costs
only itself. Payloads that do not parse, or whose device_id contradicts the topic, are logged, counted
and skipped; so are messages of another fleet (counted as `foreign`), which would otherwise appear as ghost devices.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from cloud import fleet, rollout
from cloud.db import insert_ignore
from cloud.db.tables import EventRecord, FeedbackRecord, SampleRecord, TelemetryRecord
from cloud.errors import MalformedMessage
from cloud.identity.enrollment import enrolled_labels
from cloud.mqtt.worker import BatchWorker, Counters, MessageConsumer
from cloud.token_buckets import ClientRate
from cloud.types import ClockMs, now_ms
from protocols.telemetry_bins import feature_sketches, latency_histogram
from protocols.topics import DEFAULT_FLEET, Channel, TopicError, parse_device_topic
from protocols.v1 import messages_pb2 as pb
from protocols.validation import ImplausibleMessage, check_upward

log = logging.getLogger(__name__)

DECODERS: dict[Channel, type[Message]] = {
    Channel.TELEMETRY: pb.TelemetryWindow,
    Channel.EVENTS: pb.LifecycleEvent,
    Channel.SAMPLES: pb.SampleBatch,
    Channel.FEEDBACK: pb.FeedbackBatch,
    Channel.REPORTED: pb.ReportedState,
    Channel.PRESENCE: pb.Presence,
}
_DB_RETRY_DELAYS_S = (0.2, 1.0, 3.0)
_TELEMETRY_SUFFIX = "/" + Channel.TELEMETRY.value
_ROW_CHANNELS = (Channel.REPORTED, Channel.PRESENCE)  # the messages that update the device's row
_MAX_WARNED_DEVICES = 1_000  # unenrolled ids warned about by name; past that, only counted (forged ids are endless)


@dataclass
class IngestStats(Counters):
    received: int = 0
    accepted: int = 0  # messages of enrolled devices stored or applied (redeliveries included)
    stored: int = 0  # rows inserted (telemetry windows, events, samples)
    duplicates: int = 0  # rows skipped because their (device_id, seq) was already stored
    device_updates: int = 0
    malformed: int = 0
    foreign: int = 0  # messages of another fleet, dropped
    unenrolled: int = 0  # messages from a device id without live credentials, dropped
    implausible: int = 0  # well-formed messages that cannot be true (protocols.validation), dropped
    failed: int = 0  # well-formed messages the database refused


class ForeignFleet(MalformedMessage):
    """A well-formed topic of another fleet: not ours to store."""


def decode(topic: str, payload: bytes, *, fleet: str = DEFAULT_FLEET) -> tuple[str, Channel, Any]:
    """(device_id, channel, message) of a device->cloud message of `fleet`, or MalformedMessage saying why
    not (ForeignFleet for a message of another fleet)."""
    try:
        parsed = parse_device_topic(topic)
    except TopicError as exc:
        raise MalformedMessage(str(exc)) from None
    if parsed.fleet != fleet:
        raise ForeignFleet(f"{topic}: a message of fleet {parsed.fleet!r}, this cloud serves {fleet!r}")
    decoder = DECODERS.get(parsed.channel)
    if decoder is None:
        raise MalformedMessage(f"{parsed.channel.value} is not an ingestion channel")
    try:
        message = decoder.FromString(payload)
    except DecodeError as exc:
        raise MalformedMessage(f"{topic}: payload is not a {decoder.__name__}: {exc}") from None
    # Every device->cloud payload names its device and schema version: a payload without them (garbage
    # that happens to parse as an empty message, or a forged one) must not mark a device offline or add a
    # window dated 1970.
    if message.schema_version < 1:
        raise MalformedMessage(f"{topic}: payload has no schema_version")
    if message.device_id != parsed.device_id:
        raise MalformedMessage(f"{topic}: payload names device {message.device_id!r}, not {parsed.device_id!r}")
    # a batched event names no device (its first does) or the same one: one naming another is a forgery
    for more in getattr(message, "batch", ()):
        if more.device_id not in ("", parsed.device_id):
            raise MalformedMessage(f"{topic}: batched event seq {more.seq} names device {more.device_id!r}")
    return parsed.device_id, parsed.channel, message


def telemetry_row(device_id: str, w: pb.TelemetryWindow, received_ms: int) -> dict[str, Any]:
    return {
        "device_id": device_id, "seq": w.seq, "window_start_ms": w.window_start_ms, "window_end_ms": w.window_end_ms,
        "model_id": w.model.model_id, "model_version": w.model.version, "model_sequence": w.model.sequence,
        "inference_count": w.inference_count, "error_count": w.error_count,
        "latency_p50_us": w.latency_p50_us, "latency_p95_us": w.latency_p95_us,
        "latency_histogram": dict(zip(("bounds", "counts"), latency_histogram(w), strict=True)),
        "labelled_count": w.labelled_count, "correct_count": w.correct_count,
        "feature_counts": {str(index): counts for index, counts in feature_sketches(w).items()},
        "prediction_counts": {
            "labels": list(w.predictions.labels), "bin_edges": list(w.predictions.bin_edges),
            "counts": list(w.predictions.counts),
            **({"confidence": list(w.confidence_counts)} if w.confidence_counts else {}),
            **({"label_counts": list(w.label_counts)} if w.label_counts else {}),
        },
        "cpu_percent": w.cpu_percent, "rss_bytes": w.rss_bytes, "received_at_ms": received_ms,
        "shadow_compared": w.shadow_compared, "shadow_agreed": w.shadow_agreed, "shadow_dropped": w.shadow_dropped,
    }  # fmt: skip


def event_row(device_id: str, e: pb.LifecycleEvent) -> dict[str, Any]:
    try:
        kind = pb.EventKind.Name(e.kind).removeprefix("EVENT_KIND_").lower()  # type: ignore[arg-type]
    except ValueError:
        kind = f"unknown_{e.kind}"
    return {
        "device_id": device_id, "seq": e.seq, "ts_ms": e.ts_ms, "kind": kind, "deployment_id": e.deployment_id,
        "model_id": e.model.model_id, "model_version": e.model.version,
        "error_code": e.error.code or None, "error_message": e.error.message or None,
    }  # fmt: skip


def event_rows(device_id: str, e: pb.LifecycleEvent) -> list[dict[str, Any]]:
    """The event and those it carries in `batch` (an agent's `event_batch`), each its own row by its seq."""
    return [event_row(device_id, e), *(event_row(device_id, more) for more in e.batch)]


def sample_rows(device_id: str, b: pb.SampleBatch) -> list[dict[str, Any]]:
    return [
        {
            "device_id": device_id, "batch_seq": b.seq, "position": i, "model_id": b.model.model_id,
            "model_version": b.model.version, "input": list(s.input), "prediction": s.prediction,
            "label": s.label or None, "ts_ms": s.ts_ms, "prediction_id": s.prediction_id or f"{b.seq}:{i}",
            "inclusion_probability": s.inclusion_probability or None, "confidence": s.confidence or None,
        }  # fmt: skip
        for i, s in enumerate(b.samples)
    ]


def feedback_rows(device_id: str, b: pb.FeedbackBatch, received_ms: int) -> list[dict[str, Any]]:
    """The batch's labels; an item without a prediction id or a label says nothing and is left out."""
    return [
        {"device_id": device_id, "prediction_id": f.prediction_id, "label": f.label, "ts_ms": f.ts_ms or received_ms,
         "received_at_ms": received_ms, "source": "mqtt"}  # fmt: skip
        for f in b.items
        if f.prediction_id and f.label
    ]


class UrgentBudget(ClientRate):
    """How many windows each watched device may send ahead of the fleet: a token bucket per device (burst
    `burst`, refilled `per_s` a second). A canary reports a window every telemetry interval (60 s by default,
    1 s in the benchmarks), well inside it; one holding broker credentials and flooding its telemetry topic
    would otherwise have every window stored first and starve the rest of the fleet's ingestion."""

    def __init__(self, *, burst: int = 5, per_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(per_s, burst, clock=clock)

    def take(self, client: str) -> bool:  # type: ignore[override]
        """True and one window spent, or False: the device is past its budget."""
        return super().take(client) == 0


class Ingestor(MessageConsumer):
    def __init__(
        self,
        engine: Engine,
        *,
        deployer: rollout.Deployer | None = None,
        fleet: str = DEFAULT_FLEET,
        batch_size: int = 200,
        max_queue: int = 10_000,
        linger_s: float = 0.02,
        clock: ClockMs = now_ms,
    ) -> None:
        self.engine = engine
        self.deployer = deployer
        # called after a commit that stored telemetry windows or device reports: what rollout gates judge (the
        # service wakes its rollout controller with it, so a gate judges without waiting for its next tick)
        self.on_stored: Callable[[], None] | None = None
        # ...and, as well, after one that stored windows of a watched device (`watch`): an open wave's gates may
        # decide on them, so the service wakes its controller without its usual gap between woken ticks
        self.on_watched_stored: Callable[[], None] | None = None
        self.fleet = deployer.fleet if deployer is not None else fleet
        self.clock = clock
        self.stats = IngestStats()
        self.implausible_rules: dict[str, int] = {}  # rule -> messages refused under it (under stats.lock)
        self._warned_devices: set[str] = set()
        # devices whose telemetry a rollout gate waits for (`watch`): their windows are stored first
        self._watched: frozenset[str] = frozenset()
        self._urgent_budget = UrgentBudget()
        self.worker: BatchWorker[tuple[str, bytes]] = BatchWorker(
            "edgefleet-ingest", self.process, max_queue=max_queue, batch_size=batch_size, urgent=self._is_watched,
            linger_s=linger_s,  # a batch waits up to 20 ms for company: a transaction's fixed cost is shared
        )

    def watch(self, device_ids: Collection[str]) -> None:
        """Store these devices' telemetry windows ahead of the rest (the rollout controller's open waves)."""
        self._watched = frozenset(device_ids)
        self._urgent_budget.keep_only(self._watched)

    def _is_watched(self, message: tuple[str, bytes]) -> bool:
        """A telemetry window of a watched device (on the transport's thread: cheap, no decoding)."""
        watched, topic = self._watched, message[0]
        if not watched or not topic.endswith(_TELEMETRY_SUFFIX):
            return False
        try:
            device_id = parse_device_topic(topic).device_id
        except TopicError:
            return False
        # a watched device flooding windows jumps the queue only within its budget: the rest wait their turn
        return device_id in watched and self._urgent_budget.take(device_id)

    def process(self, messages: list[tuple[str, bytes]]) -> None:
        """Store a batch in one transaction (falling back to one transaction per message)."""
        self.stats.add(received=len(messages))
        decoded = []
        for topic, payload in messages:
            if not payload:
                continue  # a cleared retained message: nothing to store
            try:
                item = decode(topic, payload, fleet=self.fleet)
                check_upward(item[2], self.clock())
                decoded.append(item)
            except ImplausibleMessage as exc:
                self._refuse(exc, topic)
            except ForeignFleet as exc:
                self.stats.add(foreign=1)
                log.debug("dropping: %s", exc)
            except MalformedMessage as exc:
                self.stats.add(malformed=1)
                log.warning("skipping malformed message: %s", exc)
        if not decoded:
            return
        try:
            self._with_db_retries(lambda: self._store(decoded))
        except Exception as exc:
            log.warning("batch of %d failed (%s); storing one by one", len(decoded), exc)
            for item in decoded:
                try:
                    self._store([item])
                except Exception:
                    self.stats.add(failed=1)
                    log.exception("could not store %s from %s", item[1].value, item[0])

    def _refuse(self, exc: ImplausibleMessage, topic: str) -> None:
        with self.stats.lock:
            self.stats.implausible += 1
            first = exc.rule not in self.implausible_rules
            self.implausible_rules[exc.rule] = self.implausible_rules.get(exc.rule, 0) + 1
        if first:  # once per rule: a misbehaving device repeats itself, the log should not
            log.warning("refusing implausible messages (%s), first: %s: %s", exc.rule, topic, exc)

    def _with_db_retries(self, action: Callable[[], None]) -> None:
        for delay in _DB_RETRY_DELAYS_S:
            try:
                return action()
            except OperationalError as exc:  # database unreachable or busy: wait rather than lose the batch
                log.warning("database unavailable (%s); retrying in %.1f s", exc.orig, delay)
                time.sleep(delay)
        action()

    def _device_rows(self, session: Session, device_ids: set[str]) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """The devices' rows as plain values, and the ids of those made here: an enrolled device has a row, but
        for a race with its revocation (then it is created, as an operator's deployment to it would)."""
        rows = fleet.read_device_rows(session, device_ids)
        missing = device_ids - rows.keys()
        created = {device_id for device_id in sorted(missing) if fleet.ensure_device(session, device_id)[1]}
        if missing:
            rows.update(fleet.read_device_rows(session, missing))
        return rows, created

    def _store(self, decoded: list[tuple[str, Channel, Any]]) -> None:
        received = self.clock()
        telemetry: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        samples: list[dict[str, Any]] = []
        feedback: list[dict[str, Any]] = []
        changed: list[str] = []
        updates = reports = 0
        watched, watched_windows = self._watched, False
        with Session(self.engine) as session:
            enrolled = enrolled_labels(session, {device_id for device_id, _, _ in decoded})
            unenrolled = [device_id for device_id, _, _ in decoded if device_id not in enrolled]
            # the rows this batch updates, read at once as plain values and written back in bulk (ORM objects for
            # them were a third of the ingest thread's time in a 1,000-device rollout)
            device_rows, created = self._device_rows(session, {
                d for d, channel, msg in decoded if d in enrolled and (channel in _ROW_CHANNELS or (
                    channel is Channel.TELEMETRY and msg.HasField("spool_dropped")))
            })  # fmt: skip
            targets = rollout.read_targets(
                session, ((msg.deployment_id, d) for d, channel, msg in decoded if channel is Channel.REPORTED)
            )  # and the deployment targets reports move
            written: dict[str, dict[str, Any]] = {}  # device id -> the columns this batch changed
            target_changes: dict[tuple[str, str], dict[str, Any]] = {}  # (deployment, device) -> changed columns

            def change(device_id: str, changes: dict[str, Any]) -> None:
                device_rows[device_id].update(changes)  # a device's next message in the batch sees them
                written.setdefault(device_id, {}).update(changes)

            # device by device in id order (stable: each device's messages keep their arrival order)
            for device_id, channel, msg in sorted(decoded, key=lambda message: message[0]):
                if device_id not in enrolled:
                    continue
                if channel is Channel.TELEMETRY:
                    telemetry.append(telemetry_row(device_id, msg, received))
                    watched_windows = watched_windows or device_id in watched
                    if device_id in device_rows and (drops := fleet.spool_drop_changes(device_rows[device_id], msg)):
                        change(device_id, drops)
                        updates += 1
                elif channel is Channel.EVENTS:
                    events.extend(event_rows(device_id, msg))
                elif channel is Channel.SAMPLES:
                    samples.extend(sample_rows(device_id, msg))
                elif channel is Channel.FEEDBACK:
                    feedback.extend(feedback_rows(device_id, msg, received))
                elif channel is Channel.REPORTED:
                    result = fleet.reported_changes(device_rows[device_id], msg, clock=self.clock,
                                                    enrolled_labels=enrolled[device_id])  # fmt: skip
                    if result is not None:
                        change(device_id, result[0])
                        moved = rollout.record_report(device_id, msg, targets, clock=self.clock)
                        if moved is not None:
                            target_changes.setdefault(moved[0], {}).update(moved[1])
                        reports += 1
                        if result[1] or device_id in created:
                            changed.append(device_id)
                    updates += 1
                else:
                    change(device_id, fleet.presence_changes(device_rows[device_id], msg, clock=self.clock))
                    if device_id in created:
                        changed.append(device_id)
                    updates += 1
            # the devices' rows in id order, then the targets' in key order: every row this batch locks is locked
            # in one global order, so two workers' batches never deadlock; each deployment whose targets moved is
            # rolled up once
            fleet.write_device_rows(session, written)
            rollout.write_targets(session, target_changes)
            for deployment_id in sorted({deployment_id for deployment_id, _ in target_changes}):
                rollout.refresh_status(session, deployment_id)
            windows = insert_ignore(session, TelemetryRecord, telemetry, ["device_id", "seq"])
            stored = windows + insert_ignore(session, EventRecord, events, ["device_id", "seq"])
            sample_stored = insert_ignore(session, SampleRecord, samples, ["device_id", "batch_seq", "position"])
            sample_stored += insert_ignore(session, FeedbackRecord, feedback, ["device_id", "prediction_id"])
            session.commit()
        rows = len(telemetry) + len(events) + len(samples) + len(feedback)
        self.stats.add(
            stored=stored + sample_stored, duplicates=rows - stored - sample_stored, device_updates=updates,
            unenrolled=len(unenrolled), accepted=len(decoded) - len(unenrolled),
        )
        self._warn_unenrolled(unenrolled)
        log.debug("stored %d of %d rows, %d device updates", stored + sample_stored, rows, updates)
        if self.on_stored is not None and (windows or reports):
            self.on_stored()
        if self.on_watched_stored is not None and windows and watched_windows:
            self.on_watched_stored()
        if self.deployer is not None and changed:
            try:  # the batch's new and relabelled devices together: one query when no label deployment is open
                self.deployer.reconcile_devices(changed)
            except Exception:  # stored all the same; their next label change or a deployment reaches them
                log.exception("could not reconcile %d new or relabelled device(s)", len(set(changed)))

    def _warn_unenrolled(self, device_ids: list[str]) -> None:
        for device_id in dict.fromkeys(device_ids):
            if device_id not in self._warned_devices and len(self._warned_devices) < _MAX_WARNED_DEVICES:
                self._warned_devices.add(device_id)
                log.warning("dropping messages from %s: not enrolled, or revoked (edgefleet devices enroll)", device_id)
