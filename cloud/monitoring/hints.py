"""Sampler hints: what the cloud's drift verdicts point at, sent to the devices' samplers (cloud -> `cmd`).

While a drift alert holds, each device it names gets a SamplerHint for the model version: the bins of
its drifted features that its telemetry over the alert's lookback fills more than the reference does
(`hinted_bins`: share at least HINT_RATIO times the reference's, the HINT_BINS_PER_FEATURE most
over-filled), so its sampler favours the rows a retraining needs most. The hint is a director-signed
command (protocols.commands) that expires after `ttl_s`; it is sent again when what it says changes and
every `ttl_s / 3` while it holds (`cmd` is not retained: a device offline at the first send gets the next),
and a device no alert names any more is sent an empty hint, which clears the previous one at once (a
missed clear lapses at the expiry).

`SamplerHinter` keeps what it sent in memory: a restarted process sends the hints of the alerts that
still hold again, and clears of what it sent before the restart are left to the expiry. Each cloud process
hints on its own; the same hint twice is harmless (the newer counter wins, with the same bins). The
counter is the process's clock in ms, kept strictly increasing per device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, select

from cloud import registry
from cloud.db.tables import TelemetryRecord
from cloud.errors import NotFoundError
from cloud.monitoring import drift
from cloud.monitoring.alerts import Alert
from cloud.rollout.director import Director
from cloud.types import ClockMs, Publisher, now_ms
from protocols.commands import MAX_HINT_BINS, sign_command
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)

HINT_RATIO = 1.25  # a bin the device fills 25 % more than the reference (a 0.5 sigma shift: top bin ~1.7x)
HINT_BINS_PER_FEATURE = 3

Bins = tuple[tuple[int, int], ...]  # (feature index, bin), sorted


def hinted_bins(reference: pb.ReferenceProfile, counts: Mapping[int, Sequence[float]], features: Sequence[int]) -> Bins:
    """The bins of `features` that `counts` (a device's summed sketches) over-fill against the reference."""
    profiles = {int(p.index): [float(c) for c in p.counts] for p in reference.features}
    found: list[tuple[int, int]] = []
    for feature in features:
        ref, seen = profiles.get(feature), counts.get(feature)
        if not ref or seen is None or len(seen) != len(ref) or sum(seen) <= 0 or sum(ref) <= 0:
            continue
        ref_total, seen_total = sum(ref), float(sum(seen))
        ratios = [
            (s / seen_total) / (r / ref_total) if r > 0 else (float("inf") if s > 0 else 0.0)
            for r, s in zip(ref, seen, strict=True)
        ]
        over = sorted((k for k, q in enumerate(ratios) if q >= HINT_RATIO), key=lambda k: -ratios[k])
        found += [(feature, k) for k in over[:HINT_BINS_PER_FEATURE]]
    return tuple(sorted(found)[:MAX_HINT_BINS])


def device_counts(session: Session, device_id: str, model_id: str, version: str, since_ms: int) -> dict[int, list[int]]:
    t = TelemetryRecord
    rows = session.exec(
        select(t.feature_counts).where(t.device_id == device_id, t.model_id == model_id, t.model_version == version)
        .where(col(t.window_end_ms) >= since_ms)
    ).all()  # fmt: skip
    return drift.merge_counts({int(k): v for k, v in row.items() if k.isdigit()} for row in rows)


def wanted_hints(session: Session, alerts: Sequence[Alert], since_ms: int) -> dict[str, tuple[pb.ModelRef, Bins]]:
    """Per device an active drift alert names: the model version and the bins to hint (the first alert
    naming a device wins: a device serves one model)."""
    wanted: dict[str, tuple[pb.ModelRef, Bins]] = {}
    for alert in alerts:
        if alert.kind != "drift":
            continue
        try:
            version = registry.get_model_version(session, alert.model_id, alert.version)
            reference = registry.manifest_of(version).reference
        except NotFoundError:
            continue
        for driver in alert.detail.get("drivers", []):
            device, features = driver["device_id"], [int(f) for f in driver.get("features", [])]
            if device in wanted or not features:
                continue
            counts = device_counts(session, device, alert.model_id, alert.version, since_ms)
            bins = hinted_bins(reference, counts, features)
            if bins:
                wanted[device] = (pb.ModelRef(model_id=alert.model_id, version=alert.version), bins)
    return wanted


@dataclass
class _Sent:
    model: pb.ModelRef
    bins: Bins
    at_ms: int


class SamplerHinter:
    """Sends each device its hint (signed by the current director) when it changes, refreshes it while it
    holds, clears it when no alert names the device any more."""

    def __init__(self, publisher: Publisher, director: Callable[[], Director], *, ttl_s: float = 900.0,
                 clock: ClockMs = now_ms) -> None:  # fmt: skip
        self.publisher = publisher
        self.director = director  # read at each send: the refresher swaps in a new one after a key rotation
        self.ttl_ms = int(ttl_s * 1000)
        self.clock = clock
        self._sent: dict[str, _Sent] = {}
        self._counters: dict[str, int] = {}
        self.sent = self.cleared = 0

    def update(self, wanted: Mapping[str, tuple[pb.ModelRef, Bins]]) -> list[str]:
        """Send what changed or is due; returns the devices sent to."""
        now = self.clock()
        touched = []
        for device in [d for d in self._sent if d not in wanted]:
            previous = self._sent.pop(device)
            if self._send(device, previous.model, (), now):
                self.cleared += 1
                touched.append(device)
        for device, (model, bins) in wanted.items():
            last = self._sent.get(device)
            due = last is None or last.bins != bins or last.model != model or now - last.at_ms >= self.ttl_ms // 3
            if due and self._send(device, model, bins, now):
                self._sent[device] = _Sent(model, bins, now)
                self.sent += 1
                touched.append(device)
        return touched

    def command(self, device_id: str, model: pb.ModelRef, bins: Bins, now: int) -> pb.SignedCommand:
        director = self.director()
        counter = max(now, self._counters.get(device_id, 0) + 1)
        self._counters[device_id] = counter
        hint = pb.SamplerHint(model=model, features=[f for f, _ in bins], bins=[k for _, k in bins])
        command = pb.Command(fleet=director.fleet, device_id=device_id, counter=counter, issued_at_ms=now,
                             expires_at_ms=now + self.ttl_ms, sampler_hint=hint)  # fmt: skip
        return sign_command(director.key, command)

    def _send(self, device_id: str, model: pb.ModelRef, bins: Bins, now: int) -> bool:
        spec = Channel.COMMAND.spec
        try:
            signed = self.command(device_id, model, bins, now)
            topic = device_topic(device_id, Channel.COMMAND, fleet=self.director().fleet)
            self.publisher.publish(topic, signed.SerializeToString(), qos=spec.qos, retain=spec.retain)
        except Exception:  # the next tick tries again
            log.exception("could not send %s its sampler hint", device_id)
            return False
        return True
