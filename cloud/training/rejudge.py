"""Judging two registered versions again, on a field dataset version: the `evaluate` step on its own.

A challenger that waits for approval may wait days; before an operator approves it, `edgefleet pipeline
evaluate` scores it and the current champion, as the devices run them, on newer labelled field data (and
the champion's held-out reference rows) under the same margin rule. Nothing is registered or moved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlmodel import Session

from cloud import registry
from cloud.registry import field_data
from cloud.registry.artifacts import ArtifactStore
from cloud.training import champion as rule
from cloud.training.candidates import recipe_of, reference_split
from cloud.training.evaluation import predict_labels


@dataclass(frozen=True)
class Judgement:
    champion: str
    challenger: str
    field_dataset: str
    verdict: rule.Verdict
    field_eval: rule.Comparison
    reference: rule.Comparison


def judge_versions(
    session: Session, store: ArtifactStore, model_id: str, champion: str, challenger: str, field_dataset: str,
    policy: rule.MarginPolicy,
) -> Judgement:  # fmt: skip
    """Champion and challenger on every row of `field_dataset` and on the champion's reference hold-out."""
    rows = field_data.load(session, store, field_dataset)
    recipe = recipe_of(session, model_id, champion)
    reference = reference_split(recipe)
    X = np.asarray([r.input for r in rows.rows], dtype=np.float32).reshape(-1, reference.X_test.shape[1])
    predictions = {}
    for version in (champion, challenger):
        manifest = registry.manifest_of(registry.get_model_version(session, model_id, version))
        blobs = {a.name: store.get(a.sha256) for a in manifest.artifacts}
        predictions[version] = (predict_labels(manifest, blobs, X), predict_labels(manifest, blobs, reference.X_test))
    field_cmp = rule.compare("field", rows.labels, predictions[champion][0], predictions[challenger][0])
    ref_cmp = rule.compare("reference", [str(v) for v in reference.y_test], predictions[champion][1],
                           predictions[challenger][1])  # fmt: skip
    return Judgement(champion, challenger, field_dataset, rule.judge(field_cmp, ref_cmp, policy), field_cmp, ref_cmp)
