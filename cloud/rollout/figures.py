"""A model's figures on a set of devices over a period, read from stored telemetry windows, for the gates.

One query per arm, bounded by the devices and the period; latency quantiles come from the windows' merged
histograms when they share bounds (cloud.monitoring.summaries.latency_quantiles), predictions are summed
per label (and a multilabel model's rows on per label), and the on-device shadow comparisons (devices on
probation) are summed for `shadow_agreement`.

No device weighs more than MAX_DEVICE_SHARE times the (lower) median device's volume: a device's counts
above that are scaled down, its rates and distribution kept. The figures come from devices' own windows,
so without the cap one compromised device could claim a million clean inferences and dilute every other
device's errors or prediction shift (a bad model passing), or claim errors enough to roll a good one back.
Honest fleets with even traffic are not touched; a wave of one device has nobody to be compared with.
(Latency quantiles come from the merged histograms, uncapped; the per-device histograms and shadow counts kept
for the gates' early tests are capped.)

A device counts (in `devices`, the gates' min_devices and their early floor of two, and in that median) only
once its windows hold a call (an inference or an error): an agent that activates a model sends an empty window
for it until its first requests come. Counting those, one device's calls beside an empty window passed the
early floor of two devices, and empty windows pulled the median to 0, capping every device at 4 calls: a
canary wave's first 10-row windows counted 4 rows each, and the gates waited a telemetry period or two more
(synchronised traffic, benchmarks/rollout.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from statistics import median_low
from typing import Any, Protocol, cast

from sqlalchemy import select as select_columns
from sqlmodel import Session, col

from cloud.db import among
from cloud.db.tables import TelemetryRecord
from cloud.monitoring.summaries import LatencyWindow, latency_quantiles
from cloud.rollout.gates import ArmFigures

MAX_DEVICE_SHARE = 4.0  # a device counts for at most this many median devices


class GateWindow(LatencyWindow, Protocol):
    """What the figures read of a telemetry window (a TelemetryRecord, or a row of `WINDOW_COLUMNS`): the
    latency columns and these."""

    @property
    def device_id(self) -> str: ...
    @property
    def error_count(self) -> int: ...
    @property
    def prediction_counts(self) -> dict[str, Any]: ...
    @property
    def shadow_compared(self) -> int: ...
    @property
    def shadow_agreed(self) -> int: ...


# read as plain rows of these columns, not as TelemetryRecord objects with every column (the feature sketches
# above all): a wave's baseline covers a day of its devices' windows, and as ORM objects 10,500 windows cost the
# controller 2.7 s of CPU holding the interpreter lock, ingestion waiting behind it, against 0.54 s so
_T = TelemetryRecord
WINDOW_COLUMNS = (col(_T.device_id), col(_T.inference_count), col(_T.error_count), col(_T.prediction_counts),
                  col(_T.latency_histogram), col(_T.latency_p50_us), col(_T.latency_p95_us), col(_T.shadow_compared),
                  col(_T.shadow_agreed))  # fmt: skip


def device_weights(rows: Sequence[GateWindow]) -> dict[str, float]:
    """Each device's weight in the arm's sums: 1, or less for a device whose volume (inferences and errors)
    is above MAX_DEVICE_SHARE x the lower median device's (of those with any: see the module's docstring)."""
    volume: Counter[str] = Counter()
    for row in rows:
        volume[row.device_id] += row.inference_count + row.error_count
    calling = [v for v in volume.values() if v]
    if len(calling) < 2:
        return dict.fromkeys(volume, 1.0)
    cap = MAX_DEVICE_SHARE * median_low(calling)
    return {device: min(1.0, cap / v) if v else 1.0 for device, v in volume.items()}


def arm_figures(rows: Sequence[GateWindow]) -> ArmFigures:
    weight = device_weights(rows)
    calling = {r.device_id for r in rows if r.inference_count + r.error_count}  # the devices that count
    predictions: defaultdict[str, float] = defaultdict(float)
    for row in rows:
        counts = row.prediction_counts
        keys = counts.get("labels") or [f"bin{i}" for i in range(len(counts.get("counts", [])))]
        w = weight[row.device_id]
        for key, count in zip(keys, counts.get("counts", []), strict=False):
            predictions[str(key)] += int(count) * w

    def total(field: str) -> int:
        return round(sum(getattr(r, field) * weight[r.device_id] for r in rows))

    _, p95 = latency_quantiles(rows) if rows else (None, None)
    # an empty window's histogram (no bounds) says nothing, and would spoil the windows' common bounds
    bounds, device_latency = _device_latency([r for r in rows if r.inference_count + r.error_count], weight)
    shadow: defaultdict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row in rows:
        if row.shadow_compared:
            shadow[row.device_id][0] += row.shadow_compared * weight[row.device_id]
            shadow[row.device_id][1] += row.shadow_agreed * weight[row.device_id]
    return ArmFigures(
        devices=len(calling),
        inferences=total("inference_count"),
        errors=total("error_count"),
        p95_latency_us=p95,
        predictions={key: round(count) for key, count in predictions.items()},
        shadow_compared=total("shadow_compared"),
        shadow_agreed=total("shadow_agreed"),
        latency_bounds=bounds,
        device_latency=device_latency,
        device_shadow={device: (c, a) for device, (c, a) in shadow.items()},
        label_counts=_label_counts(rows, weight),
    )


def _label_counts(rows: Sequence[GateWindow], weight: dict[str, float]) -> tuple[int, ...]:
    """A multilabel model's windows' label counts (rows, then each label's rows on) added up, each device's
    times its weight; windows counted over another number of labels than most (another manifest) left out."""
    found = [(r.device_id, r.prediction_counts.get("label_counts") or []) for r in rows]
    found = [(device, counts) for device, counts in found if len(counts) >= 2]
    if not found:
        return ()
    width = Counter(len(counts) for _, counts in found).most_common(1)[0][0]
    total = [0.0] * width
    for device, counts in found:
        if len(counts) == width:
            total = [t + float(c) * weight[device] for t, c in zip(total, counts, strict=True)]
    return tuple(round(t) for t in total)


def _device_latency(rows: Sequence[GateWindow], weight: dict[str, float],
                    ) -> tuple[tuple[float, ...], dict[str, list[float]]]:  # fmt: skip
    """Each device's latency histogram (its windows' counts added, times its weight), when every window has
    one over the same bounds (else nothing: no per-device latency evidence)."""
    hists = [(r.device_id, r.latency_histogram) for r in rows]
    bounds = {tuple(h.get("bounds", [])) for _, h in hists}
    if not hists or len(bounds) != 1:
        return (), {}
    common = next(iter(bounds))
    if not all(len(h.get("counts") or ()) == len(common) + 1 for _, h in hists):  # a window's own, malformed
        return (), {}
    found: dict[str, list[float]] = {}
    for device, h in hists:
        counts = [c * weight[device] for c in h["counts"]]
        found[device] = [a + b for a, b in zip(found[device], counts, strict=True)] if device in found else counts
    return common, found


def figures_for(
    session: Session, device_ids: Collection[str], model_id: str, version: str, *, since_ms: int,
    until_ms: int | None = None,
) -> ArmFigures:  # fmt: skip
    """model_id@version's figures on device_ids from windows ending in [since_ms, until_ms)."""
    if not device_ids:
        return ArmFigures()
    query = select_columns(*WINDOW_COLUMNS).where(
        among(session, col(TelemetryRecord.device_id), device_ids),
        col(TelemetryRecord.model_id) == model_id,
        col(TelemetryRecord.model_version) == version,
        col(TelemetryRecord.window_end_ms) >= since_ms,
    )
    if until_ms is not None:
        query = query.where(col(TelemetryRecord.window_end_ms) < until_ms)
    return arm_figures(cast(list[GateWindow], session.execute(query).all()))  # rows: attributes by column name
