"""The cloud starting retrains by itself: every `retrain_check_s`, for each model, if a trigger fires
(drift alert, confident accuracy drop, schedule) and labelled field data has changed since the model's
last retrain, run one (`retrain`). A winner is registered as `challenger` and, by `retrain_on_win`, waits
for approval (the default) or goes out as a canary.

"Changed" is exact because field datasets are content-addressed: the snapshot taken now is compared by
hash with the one the last retrain read, so a lasting drift alert does not retrain on the same data again
and again; new labels make a new hash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from cloud import registry
from cloud.db import session_scope
from cloud.db.tables import PipelineRun
from cloud.errors import CloudError
from cloud.periodic import Periodic
from cloud.registry import field_data
from cloud.registry.artifacts import ArtifactStore
from cloud.training import watch
from cloud.training.triggers import TriggerPolicy
from cloud.types import ClockMs, now_ms

log = logging.getLogger(__name__)


def last_field_dataset(engine: Engine, model_id: str) -> str | None:
    with session_scope(engine) as session:
        runs = session.exec(select(PipelineRun).where(PipelineRun.pipeline == "retrain")
                            .order_by(col(PipelineRun.started_at_ms).desc()))  # fmt: skip
        for run in runs:
            if run.parameters.get("model_id") == model_id:
                return (run.parameters.get("field_datasets") or {}).get("field")  # type: ignore[no-any-return]
    return None


class AutoRetrainer(Periodic):
    name = "edgefleet-autoretrain"

    def __init__(
        self, engine: Engine, store: ArtifactStore, retrain: Callable[..., Any], *, interval_s: float,
        policy: TriggerPolicy | None = None, clock: ClockMs = now_ms,
    ) -> None:  # fmt: skip
        self.engine, self.store, self.retrain, self.interval_s = engine, store, retrain, interval_s
        self.policy, self.clock = policy or TriggerPolicy(), clock

    def tick(self) -> dict[str, str]:
        """One look at every model; returns model id -> what happened (for logs and tests)."""
        with session_scope(self.engine) as session:
            models = [m["model_id"] for m in registry.list_models(session)]
        return {model_id: self._look(model_id) for model_id in models}

    def _look(self, model_id: str) -> str:
        with session_scope(self.engine) as session:
            trigger = watch.detect(session, model_id, self.policy, now_ms=self.clock())
        if trigger is None:
            return "no trigger"
        try:
            with session_scope(self.engine) as session:
                snapshot = field_data.snapshot(session, self.store, field_data.Selection(model_id)).content_hash
        except CloudError as exc:  # no labelled samples yet
            return f"{trigger.kind.value}, but {exc}"
        if snapshot == last_field_dataset(self.engine, model_id):
            return f"{trigger.kind.value}, but no new labelled data since the last retrain"
        try:
            result = self.retrain(model_id, trigger=trigger, actor="autoretrain", field_dataset=snapshot)
        except CloudError as exc:
            log.warning("retrain of %s (%s) refused: %s", model_id, trigger.reason, exc)
            return f"{trigger.kind.value}, retrain refused: {exc}"
        log.info("retrain of %s (%s): %s", model_id, trigger.reason, result.verdict.outcome.value)
        return f"{trigger.kind.value}: {result.verdict.outcome.value}" + (
            f", challenger v{result.challenger}" if result.challenger else "")
