"""The manifest fragment the compiler hands to the cloud, and the artifact records inside it.

Field meanings and units are documented in protocols/MANIFEST.md; keep the two in step.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

from google.protobuf import json_format

from model_compiler.candidates import Candidate
from model_compiler.types import INPUT_NAME, LABEL_NAME, SCORES_NAME, VALUES_NAME
from protocols.v1 import messages_pb2 as pb

FRAGMENT_FILE = "manifest.fragment.json"
# lineage key of the compiler's notes on what it did not build and why (e.g. no TFLite form)
NOTES_KEY = "compiler_notes"
# lineage key prefix (then ".onnx" / ".tflite") of what `--quantize auto` kept per target, and why
CHOICE_KEY = "compiler_choice"


def io_schema(
    *,
    n_features: int,
    classifier: bool,
    class_labels: list[str],
    n_outputs: int,
    feature_names: list[str],
    accepts_missing: bool,
    label_dtype: str | None = None,
) -> pb.IoSchema:
    output = SCORES_NAME if classifier else VALUES_NAME
    outputs = [pb.TensorSpec(name=output, dtype="float32", shape=[-1, n_outputs])]
    if label_dtype:  # classifiers converted by skl2onnx name their predicted labels too
        outputs.insert(0, pb.TensorSpec(name=LABEL_NAME, dtype=label_dtype, shape=[-1]))
    return pb.IoSchema(
        inputs=[pb.TensorSpec(name=INPUT_NAME, dtype="float32", shape=[-1, n_features])],
        outputs=outputs,
        task=pb.TASK_CLASSIFICATION if classifier else pb.TASK_REGRESSION,
        class_labels=class_labels,
        n_features=n_features,
        feature_names=feature_names,
        accepts_missing=accepts_missing,
    )


def artifact_record(
    candidate: Candidate, *, classifier: bool, requirement: str, label_output: bool = False
) -> pb.Artifact:
    """What the manifest says about one artifact (metrics are added once measured)."""
    return pb.Artifact(
        name=candidate.name,
        format=candidate.format,
        sha256=hashlib.sha256(candidate.data).hexdigest(),
        size_bytes=len(candidate.data),
        quantization=candidate.quantization,
        runtime=candidate.runtime,
        runtime_requirement=requirement,
        predicted_output=(LABEL_NAME if label_output else "") if classifier else VALUES_NAME,
        scores_output=SCORES_NAME if classifier else "",
    )


def estimator_digest(estimator: Any) -> str:
    """sha256 of the estimator's pickle (protocol 5): the same fitted object gives the same digest."""
    return hashlib.sha256(pickle.dumps(estimator, protocol=5)).hexdigest()


def fragment_json(fragment: pb.Manifest) -> str:
    return json_format.MessageToJson(fragment, indent=2, preserving_proto_field_name=True, sort_keys=True) + "\n"
