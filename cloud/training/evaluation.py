"""Scoring a compiled model version on labelled rows, in the runtime the devices use.

Champion and challenger are judged as they run on the devices (their ONNX artifact through onnxruntime,
via the agent's own loader), not as scikit-learn estimators: a challenger whose quantisation cost it the
win should not win.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edge_agent.serving.runtime import ONNXRUNTIME, load_model
from protocols.v1 import messages_pb2 as pb


def device_artifact(manifest: pb.Manifest) -> pb.Artifact:
    """The artifact a device with onnxruntime would run: the first ONNX one listed (the compiler lists
    its chosen artifact first)."""
    for artifact in manifest.artifacts:
        if artifact.runtime in ("", ONNXRUNTIME) and artifact.format == pb.ARTIFACT_FORMAT_ONNX:
            return artifact
    raise ValueError(f"{manifest.model_id} v{manifest.version} has no ONNX artifact to evaluate")


def predict_labels(manifest: pb.Manifest, blobs: Mapping[str, bytes], X: np.ndarray) -> list[str]:
    """Predicted labels (as strings, like the devices report them) of each row of X."""
    artifact = device_artifact(manifest)
    data = blobs[artifact.name]
    if not len(X):
        return []
    model = load_model(artifact, data, manifest.io)
    prediction = model.predict(np.ascontiguousarray(X, dtype=np.float32))
    if prediction.labels is None:
        raise ValueError(f"{manifest.model_id}: the artifact predicts no labels (not a classifier)")
    return [str(label) for label in prediction.labels]


def as_strings(values: Sequence[object]) -> list[str]:
    return [str(v) for v in values]
