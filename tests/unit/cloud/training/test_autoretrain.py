"""The cloud's own retrain triggers: a trigger plus new labelled data starts a retrain; the same data twice
does not."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.db.tables import SampleRecord
from cloud.monitoring import feedback
from cloud.registry.artifacts import MemoryArtifactStore
from cloud.training import retrain as loop
from cloud.training.autoretrain import AutoRetrainer
from cloud.training.pipeline import TrainingConfig, run_training_pipeline
from protocols.signing import Signer
from simulator.data import DataStream, Drift


def _labelled(engine: Engine, X: np.ndarray, y: np.ndarray, first: int) -> None:
    with Session(engine) as session:
        session.add_all(SampleRecord(device_id="d1", batch_seq=1, position=i, model_id="digits-classifier",
                                     model_version="1", input=X[i - first].tolist(), prediction="?", ts_ms=i,
                                     prediction_id=str(i)) for i in range(first, first + len(X)))  # fmt: skip
        labels = [feedback.Label("d1", str(i), str(y[i - first])) for i in range(first, first + len(y))]
        feedback.record(session, labels)
        session.commit()


def test_a_trigger_with_new_labels_retrains_and_the_same_labels_do_not_again(engine: Engine, signer: Signer) -> None:
    store = MemoryArtifactStore()
    champion = run_training_pipeline(engine, store, signer, TrainingConfig())
    calls: list[dict[str, Any]] = []

    def retrain(model_id: str, **options: Any) -> loop.RetrainResult:
        calls.append(options)
        return loop.retrain(engine, store, signer, model_id, **options)

    auto = AutoRetrainer(engine, store, retrain, interval_s=60)
    assert auto.tick() == {"digits-classifier": "no trigger"}  # no labels, no telemetry, no schedule

    features = tuple(int(i) for i in np.argsort(-champion.split.X_train.std(axis=0))[:6])
    stream = DataStream(champion.split.X_test, champion.split.y_test, seed=4, drift=Drift(features, shift=3.0))
    _labelled(engine, *stream.batch(200), first=0)  # predictions "?": field accuracy 0, a confident drop
    assert auto.tick() == {"digits-classifier": "accuracy: win, challenger v2"}
    assert calls[0]["actor"] == "autoretrain" and calls[0]["trigger"].kind == "accuracy"
    assert auto.tick() == {"digits-classifier": "accuracy, but no new labelled data since the last retrain"}
    assert len(calls) == 1

    _labelled(engine, *stream.batch(20), first=200)
    assert auto.tick()["digits-classifier"].startswith("accuracy: ")
    assert len(calls) == 2 and calls[1]["field_dataset"] != calls[0]["field_dataset"]
