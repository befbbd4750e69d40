"""What starts a retraining run: a drift alert, an accuracy drop, a schedule or an operator. Pure: each
rule reads figures the monitoring has already computed and answers with a Trigger or None.

An accuracy drop counts only when it is confident: the upper end of the field accuracy's 95 % interval
is below the model's own evaluation accuracy minus the allowed drop, so a few unlucky labels start nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class TriggerKind(StrEnum):
    DRIFT = "drift"
    ACCURACY = "accuracy"
    SCHEDULE = "schedule"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Trigger:
    kind: TriggerKind
    reason: str


@dataclass(frozen=True)
class TriggerPolicy:
    on_drift: bool = True
    max_accuracy_drop: float = 0.05  # below the evaluation accuracy, at the interval's upper end
    min_labelled: int = 30  # labelled field rows before an accuracy drop can be judged
    every_s: float | None = None  # retrain on a schedule; None: never by the clock alone


def on_drift(drifted_features: Sequence[str], drifted_devices: Sequence[str], policy: TriggerPolicy) -> Trigger | None:
    """The drift detector's alert (features drifted fleet-wide or on some devices) as a trigger."""
    if not policy.on_drift or not (drifted_features or drifted_devices):
        return None
    features = ", ".join(drifted_features[:5]) or "-"
    where = f"features {features} on devices {', '.join(drifted_devices[:5]) or 'fleet-wide'}"
    return Trigger(TriggerKind.DRIFT, f"drift alert: {where}")


def on_accuracy(
    labelled: int, accuracy: float | None, high: float | None, evaluated: float, policy: TriggerPolicy
) -> Trigger | None:
    """Field accuracy (with its interval's upper end `high`) confidently below the evaluation accuracy."""
    if labelled < policy.min_labelled or accuracy is None or high is None:
        return None
    floor = evaluated - policy.max_accuracy_drop
    if high >= floor:
        return None
    return Trigger(TriggerKind.ACCURACY, f"field accuracy {accuracy:.3f} (95 % high {high:.3f}) on {labelled} "
                   f"labels is below {floor:.3f} (evaluated {evaluated:.3f} - {policy.max_accuracy_drop})")


def on_schedule(last_run_ms: int | None, now_ms: int, policy: TriggerPolicy) -> Trigger | None:
    if policy.every_s is None:
        return None
    if last_run_ms is not None and now_ms - last_run_ms < policy.every_s * 1000:
        return None
    last = "never" if last_run_ms is None else f"{(now_ms - last_run_ms) / 1000:.0f}s ago"
    return Trigger(TriggerKind.SCHEDULE, f"scheduled every {policy.every_s:g}s (last run: {last})")


def by_operator(actor: str, reason: str) -> Trigger:
    if not actor.strip():
        raise ValueError("an operator trigger names the operator")
    return Trigger(TriggerKind.OPERATOR, f"{actor}: {reason or 'asked for a retrain'}")


def first(*candidates: Trigger | None) -> Trigger | None:
    """The first rule that fired, in the order given (drift, accuracy, schedule, by convention)."""
    return next((t for t in candidates if t is not None), None)
