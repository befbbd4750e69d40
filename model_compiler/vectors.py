"""Self-test vectors: inputs with the outputs every artifact of the release must reproduce.

Vectors travel inside the manifest, readable by anyone who can read a desired state, so by default they
are synthetic: drawn from the reference profile's per-feature bins (`synthetic_inputs`), never a
customer's rows. Held-out rows are used only when asked for (`self_test_from="heldout"`).

One `SelfTest` serves all artifacts of a manifest (fp32 and INT8, ONNX and TFLite), so:
- classifiers: only rows on which every artifact and the source estimator give the same label are used,
  those with the widest top-1/top-2 score margin first (a device's float rounding must not flip them),
  taken round-robin over the labels so each class is exercised;
- regressors: rows spread evenly over the range of predictions;
- expected outputs are those of the reference artifact (the first: fp32 where built), and the tolerance
  covers the largest difference any artifact shows from it, times a safety factor, with a small floor.
"""

from __future__ import annotations

import numpy as np

from protocols.v1 import messages_pb2 as pb

SAFETY_FACTOR = 4.0
REL_FLOOR = 1e-4  # of the outputs' magnitude


def _margins(scores: np.ndarray) -> np.ndarray:
    if scores.shape[1] < 2:
        return np.abs(scores[:, 0])
    top2 = np.sort(scores, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def pick_classifier_rows(
    labels_per_artifact: list[list[str]], source_labels: list[str], scores: np.ndarray, n: int
) -> list[int]:
    agree = np.ones(len(source_labels), dtype=bool)
    for labels in labels_per_artifact:
        agree &= np.asarray(labels, dtype=object) == np.asarray(source_labels, dtype=object)
    margin = _margins(scores)
    by_label: dict[str, list[int]] = {}
    for i in sorted(np.flatnonzero(agree), key=lambda i: (-margin[i], i)):
        by_label.setdefault(source_labels[i], []).append(int(i))
    picked: list[int] = []
    queues = [by_label[k] for k in sorted(by_label)]
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return sorted(picked)


def pick_regressor_rows(values: np.ndarray, n: int) -> list[int]:
    order = np.argsort(values.reshape(len(values), -1)[:, 0], kind="stable")
    if len(order) <= n:
        return sorted(order.tolist())
    return sorted({int(order[i]) for i in np.linspace(0, len(order) - 1, n).round().astype(int)})


def synthetic_inputs(profile: pb.ReferenceProfile, n_rows: int, seed: int = 0) -> np.ndarray:
    """n_rows float32 inputs drawn feature by feature from the profile: a bin with probability proportional
    to its reference count, then a uniform value inside it. Features are drawn independently, so rows
    carry no joint information about the data the model was trained or tested on."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n_rows, len(profile.features)), dtype=np.float32)
    for feature in profile.features:
        edges = np.asarray(feature.bin_edges, dtype=np.float64)
        counts = np.asarray(feature.counts, dtype=np.float64)
        if edges.size < 2 or counts.sum() <= 0:
            x[:, feature.index] = edges[0] if edges.size else 0.0
            continue
        bins = rng.choice(len(counts), size=n_rows, p=counts / counts.sum())
        low, high = edges[bins], edges[np.minimum(bins + 1, len(edges) - 1)]
        drawn = (low + rng.random(n_rows) * (high - low)).astype(np.float32)
        # a mass-point bin is one float32 wide: rounding up would carry the value into the next bin
        x[:, feature.index] = np.where(drawn.astype(np.float64) >= high, np.float32(low), drawn)
    return x


def build_self_test(
    x: np.ndarray, rows: list[int], outputs_per_artifact: list[np.ndarray], labels: list[str] | None
) -> pb.SelfTest:
    """Vectors for `rows` of `x`; outputs_per_artifact[0] is the reference (scores or values)."""
    reference = np.asarray(outputs_per_artifact[0], dtype=np.float64).reshape(len(x), -1)[rows]
    worst = 0.0
    for out in outputs_per_artifact[1:]:
        other = np.asarray(out, dtype=np.float64).reshape(len(x), -1)[rows]
        worst = max(worst, float(np.abs(other - reference).max(initial=0.0)))
    magnitude = max(1.0, float(np.abs(reference).max(initial=0.0)))
    test = pb.SelfTest(abs_tolerance=max(REL_FLOOR * magnitude, SAFETY_FACTOR * worst), min_label_agreement=1.0)
    for k, i in enumerate(rows):
        vector = test.vectors.add(input=np.asarray(x[i], dtype=np.float32).tolist(), expected=reference[k].tolist())
        if labels is not None:
            vector.expected_label = labels[i]
    return test
