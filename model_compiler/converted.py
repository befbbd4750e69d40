"""Estimators the compiler hands to skl2onnx: SVMs, k-nearest neighbours and naive Bayes.

These have no compact hand-written form here: skl2onnx converts the final estimator (on the columns the
preprocessing gives), and `onnx_converted` puts the compiler's own preprocessing graph in front of it.
Classifiers keep skl2onnx's label output: an SVC predicts by one-vs-one votes and a k-NN by its
neighbours' votes, neither of which is always the argmax of the scores, so the artifact names the label
tensor as its prediction and the scores beside it. ONNX only, fp32 only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model_compiler.errors import UnsupportedModelError
from model_compiler.segments import Segment, imputes

# class name -> family, for the estimators skl2onnx converts that fit on a small device
CONVERTED_FAMILIES = {
    "SVC": "svm",
    "NuSVC": "svm",
    "SVR": "svm",
    "NuSVR": "svm",
    "KNeighborsClassifier": "neighbors",
    "KNeighborsRegressor": "neighbors",
    "GaussianNB": "naive_bayes",
    "MultinomialNB": "naive_bayes",
    "BernoulliNB": "naive_bayes",
    "ComplementNB": "naive_bayes",
}
_KNN_METRICS = {"minkowski", "euclidean", "manhattan"}


@dataclass(frozen=True)
class Converted:
    family: str  # "svm" | "neighbors" | "naive_bayes"
    estimator: str
    n_features: int  # raw input columns
    segments: tuple[Segment, ...]
    final: Any  # the fitted final estimator, converted by skl2onnx at build time
    classifier: bool
    n_outputs: int  # classes (classifiers) or targets (regressors)

    @property
    def accepts_missing(self) -> bool:
        return imputes(list(self.segments))


def converted_from(est: Any, n_features: int, segments: tuple[Segment, ...]) -> Converted:
    """The Converted form of a fitted SVM / k-NN / naive Bayes estimator; UnsupportedModelError for options
    skl2onnx (or a small device) cannot take."""
    name = type(est).__name__
    family = CONVERTED_FAMILIES[name]
    if family == "svm" and (not isinstance(est.kernel, str) or est.kernel == "precomputed"):
        raise UnsupportedModelError(f"{name}(kernel={est.kernel!r}) (a named kernel: linear, rbf, poly, sigmoid)")
    if family == "neighbors":
        if est.metric not in _KNN_METRICS:
            raise UnsupportedModelError(f"{name}(metric={est.metric!r}) (only {', '.join(sorted(_KNN_METRICS))})")
        if est.weights != "uniform":
            # skl2onnx 1.20's graph weighs neighbours equally: distance-weighted scores (classifiers) and
            # values (regressors) come out wrong, by up to 0.35 on digits' 0..9 targets
            raise UnsupportedModelError(f"{name}(weights={est.weights!r}) (only uniform weights convert faithfully)")
    classifier = hasattr(est, "classes_")
    if classifier and getattr(est, "outputs_2d_", False):
        raise UnsupportedModelError(f"{name} with several outputs")
    if classifier and est.classes_.dtype.kind == "f":
        raise UnsupportedModelError(f"{name} with float class labels (integers or strings convert)")
    n_outputs = len(est.classes_) if classifier else 1
    if not classifier and getattr(est, "_y", None) is not None and getattr(est._y, "ndim", 1) == 2:
        n_outputs = int(est._y.shape[1])
    return Converted(family, name, n_features, segments, est, classifier, n_outputs)
