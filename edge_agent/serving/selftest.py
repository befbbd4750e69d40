"""The self-test a device runs on a freshly loaded model before it may answer anyone.

The compiler embeds vectors (inputs with the outputs its own artifact gave) in the manifest and runs its
artifact through this very function; a device that gets different answers has a broken runtime, a
corrupted load or an incompatible build, and keeps its previous model.

Rules (from `SelfTest`):
- classifiers: the share of vectors whose label equals `expected_label` must be at least
  `min_label_agreement` (0 means unset and is read as 1.0). Where a vector also carries `expected`
  scores, `max_abs_error` reports the largest score difference, checked against `abs_tolerance` when > 0.
- regressors: every |got - expected| must be at most `abs_tolerance`; `agreement` is the share of
  vectors within it.
A test with no vectors fails: a manifest without them is not fit to activate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_agent.serving.runtime import LoadedModel
from protocols.v1 import messages_pb2 as pb


@dataclass(frozen=True)
class SelfTestResult:
    passed: bool
    agreement: float  # share of vectors that matched (0..1)
    max_abs_error: float  # largest |got - expected| over values (regressors) or scores (classifiers)
    detail: str  # one line for logs and the reported error message


def _fail(detail: str) -> SelfTestResult:
    return SelfTestResult(passed=False, agreement=0.0, max_abs_error=float("inf"), detail=detail)


def run_self_test(model: LoadedModel, self_test: pb.SelfTest, io: pb.IoSchema) -> SelfTestResult:
    """Run the embedded vectors through `model`; never raises for a bad model or bad vectors."""
    vectors = list(self_test.vectors)
    if not vectors:
        return _fail("no self-test vectors in the manifest")
    bad = [i for i, v in enumerate(vectors) if len(v.input) != model.n_features]
    if bad:
        return _fail(f"vector {bad[0]} has {len(vectors[bad[0]].input)} inputs, the model takes {model.n_features}")
    x = np.array([list(v.input) for v in vectors], dtype=np.float32)
    try:
        prediction = model.predict(x)
    except Exception as exc:  # any failure here means "do not activate", never a crash of the agent
        return _fail(f"prediction failed: {type(exc).__name__}: {exc}")
    if io.task == pb.TASK_CLASSIFICATION:
        return _check_classifier(vectors, prediction.labels, prediction.scores, self_test)
    return _check_regressor(vectors, prediction.values, self_test)


def _check_classifier(
    vectors: list[pb.SelfTestVector], labels: list[str] | None, scores: np.ndarray | None, self_test: pb.SelfTest
) -> SelfTestResult:
    if labels is None or len(labels) != len(vectors):
        return _fail("the model returned no labels for a classification self-test")
    matches = [got == v.expected_label for got, v in zip(labels, vectors, strict=True)]
    agreement = sum(matches) / len(vectors)
    needed = self_test.min_label_agreement or 1.0
    max_err = 0.0
    with_scores = [(i, v) for i, v in enumerate(vectors) if len(v.expected)]
    if with_scores and scores is not None:
        for i, v in with_scores:
            if len(v.expected) != scores.shape[1]:
                return _fail(f"vector {i} expects {len(v.expected)} scores, the model gives {scores.shape[1]}")
            max_err = max(max_err, float(np.max(np.abs(scores[i] - np.asarray(v.expected, dtype=np.float32)))))
    problems = []
    if agreement < needed:
        first = matches.index(False)
        problems.append(
            f"label agreement {agreement:.3f} < {needed:.3f} "
            f"(vector {first}: expected {vectors[first].expected_label!r}, got {labels[first]!r})"
        )
    if self_test.abs_tolerance > 0 and max_err > self_test.abs_tolerance:
        problems.append(f"score error {max_err:.3g} > tolerance {self_test.abs_tolerance:.3g}")
    passed = not problems
    detail = "; ".join(problems) if problems else f"{sum(matches)}/{len(vectors)} labels match"
    return SelfTestResult(passed=passed, agreement=agreement, max_abs_error=max_err, detail=detail)


def _check_regressor(
    vectors: list[pb.SelfTestVector], values: np.ndarray | None, self_test: pb.SelfTest
) -> SelfTestResult:
    if values is None or values.shape[0] != len(vectors):
        return _fail("the model returned no values for a regression self-test")
    got = values.reshape(len(vectors), -1).astype(np.float64)
    widths = {len(v.expected) for v in vectors}
    if widths != {got.shape[1]}:
        return _fail(f"vectors expect {sorted(widths)} outputs per row, the model gives {got.shape[1]}")
    expected = np.array([list(v.expected) for v in vectors], dtype=np.float64)
    err = np.abs(got - expected)
    if not np.isfinite(err).all():
        return _fail("the model returned non-finite values")
    row_err = err.max(axis=1)
    tolerance = self_test.abs_tolerance
    within = row_err <= tolerance
    agreement = float(within.mean())
    max_err = float(row_err.max())
    if within.all():
        return SelfTestResult(True, agreement, max_err, f"max error {max_err:.3g} <= tolerance {tolerance:.3g}")
    worst = int(np.argmax(row_err))
    return SelfTestResult(
        False,
        agreement,
        max_err,
        f"max error {max_err:.3g} > tolerance {tolerance:.3g} (vector {worst}: "
        f"expected {expected[worst].tolist()}, got {got[worst].tolist()})",
    )
