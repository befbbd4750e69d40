"""Confidence drift on the device: the top-class probability counted over the manifest's bins."""

from __future__ import annotations

import numpy as np
from support.releases import Keys, make_release

from edge_agent.serving.confidence import are_probabilities, top_class
from edge_agent.serving.runtime import FunctionModel, Prediction
from edge_agent.serving.slot import ServingModel
from edge_agent.serving.telemetry import Telemetry
from edge_agent.update.journal import InstalledModel
from model_compiler.profile import confidence_profile
from protocols.telemetry_bins import CONFIDENCE_EDGES
from protocols.v1 import messages_pb2 as pb


def _scores(x: np.ndarray) -> Prediction:
    """Two classes; the first column is the probability of the second class."""
    p = np.clip(x[:, 0].astype(np.float32), 0, 1)
    scores = np.stack([1 - p, p], axis=1)
    return Prediction(["v1:neg" if v < 0.5 else "v1:pos" for v in p], None, scores)


def _serving(keys: Keys, *, with_reference: bool = True) -> ServingModel:
    release = make_release(keys.signer, "v1", 1)
    if with_reference:
        release.manifest.reference.confidence.bin_edges.extend(CONFIDENCE_EDGES)
        release.manifest.reference.confidence.counts.extend([0] * (len(CONFIDENCE_EDGES) - 1))
        release.signed = keys.signer.sign(release.manifest)
    installed = InstalledModel(release.signed.SerializeToString(), release.sha256)
    return ServingModel.of(FunctionModel(3, _scores), installed)


def test_the_window_counts_top_class_probability_over_the_manifests_bins(keys: Keys) -> None:
    serving = _serving(keys)
    telemetry = Telemetry("dev-1", 0, serving)
    # top-class probabilities 0.5, 0.55, 0.92, 0.97, 1.0, 0.995 (p and 1 - p alike)
    x = np.array([[0.5, 0, 0], [0.45, 0, 0], [0.92, 0, 0], [0.03, 0, 0], [1.0, 0, 0], [0.995, 0, 0]], np.float32)
    telemetry.record(serving, x, serving.model.predict(x), latency_us=10.0)
    window = telemetry.close_window(1, 1, serving)
    assert window is not None
    #                                   .3  .4  .5  .6  .7  .8  .9 .95 .99  1
    assert list(window.confidence_counts) == [0, 0, 0, 2, 0, 0, 0, 1, 1, 2]


def test_no_confidence_without_a_reference_or_without_scores(keys: Keys) -> None:
    serving = _serving(keys, with_reference=False)
    telemetry = Telemetry("dev-1", 0, serving)
    x = np.array([[0.7, 0, 0]], np.float32)
    telemetry.record(serving, x, serving.model.predict(x), latency_us=10.0)
    window = telemetry.close_window(1, 1, serving)
    assert window is not None and not window.confidence_counts

    with_ref = _serving(keys)
    telemetry = Telemetry("dev-1", 0, with_ref)
    telemetry.record(with_ref, x, Prediction(["v1:pos"], None, None), latency_us=10.0)  # a labels-only artifact
    window = telemetry.close_window(1, 1, with_ref)
    assert window is not None and not window.confidence_counts


def test_the_compiler_writes_a_confidence_reference_only_for_probabilities() -> None:
    probabilities = np.array([[0.2, 0.8], [0.5, 0.5], [0.01, 0.99]], np.float32)
    profile = confidence_profile(probabilities)
    assert profile is not None and list(profile.bin_edges) == list(CONFIDENCE_EDGES)
    assert list(profile.counts) == [0, 0, 0, 1, 0, 0, 1, 0, 0, 1]
    assert confidence_profile(np.array([[2.0, -1.0], [0.3, 0.1]], np.float32)) is None  # margins, not probabilities
    assert confidence_profile(None) is None
    assert not are_probabilities(np.array([[1.0]]))  # one class: nothing to be unsure between
    top = top_class(np.array([[0.1, 0.9], [0.6, 0.4]]))
    assert top is not None and top.tolist() == [0.9, 0.6]
    assert isinstance(pb.ReferenceProfile().confidence, pb.PredictionProfile)


def _multilabel_serving(keys: Keys, labels: list[str] | None) -> ServingModel:
    """Three labels; a row's per-label probabilities are its inputs (the runtime's multilabel Prediction)."""
    release = make_release(keys.signer, "v1", 1)
    release.manifest.io.task = pb.TASK_MULTILABEL
    if labels is not None:
        release.manifest.reference.label_rates.CopyFrom(
            pb.LabelRates(labels=labels, positives=[1] * len(labels), rows=2)
        )
        release.signed = keys.signer.sign(release.manifest)
    installed = InstalledModel(release.signed.SerializeToString(), release.sha256)

    def predict(x: np.ndarray) -> Prediction:
        p = x.astype(np.float32)
        return Prediction([",".join(str(j) for j in np.flatnonzero(r > 0.5)) for r in p], p, p)

    return ServingModel.of(FunctionModel(3, predict), installed)


def test_a_multilabel_window_counts_each_labels_rows_on(keys: Keys) -> None:
    serving = _multilabel_serving(keys, ["a", "b", "c"])
    telemetry = Telemetry("dev-1", 0, serving)
    x = np.array([[0.9, 0.6, 0.1], [0.2, 0.7, 0.0], [0.5, 0.1, 0.2], [0.8, 0.9, 0.99]], np.float32)
    telemetry.record(serving, x[:1], serving.model.predict(x[:1]), latency_us=10.0)
    telemetry.record(serving, x[1:], serving.model.predict(x[1:]), latency_us=10.0)
    window = telemetry.close_window(1, 1, serving)
    assert window is not None
    assert list(window.label_counts) == [4, 2, 3, 1]  # rows counted, then a, b, c on (0.5 is not above one half)
    assert not window.confidence_counts  # a multilabel model has no confidence reference


def test_no_label_counts_without_label_rates_or_with_other_labels(keys: Keys) -> None:
    x = np.array([[0.9, 0.6, 0.1]], np.float32)
    for labels in (None, ["a", "b"]):  # a manifest before label rates; rates over other labels than the model's
        serving = _multilabel_serving(keys, labels)
        telemetry = Telemetry("dev-1", 0, serving)
        telemetry.record(serving, x, serving.model.predict(x), latency_us=10.0)
        window = telemetry.close_window(1, 1, serving)
        assert window is not None and not window.label_counts
