"""Which scikit-learn estimators the compiler takes, and how each becomes a `DenseModel` or a `Forest`.

Supported: linear models, MLPs and tree ensembles (read here), SVMs, k-NN and naive Bayes (converted by
skl2onnx, see converted.py), alone or at the end of a Pipeline of the preprocessing steps preprocess.py
traces (scalers, SimpleImputer, OneHotEncoder, OrdinalEncoder, FunctionTransformer, ColumnTransformer). The
list of linear models is explicit: a model outside it (say PoissonRegressor, whose link is not the
identity) must be refused, not compiled wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model_compiler.converted import CONVERTED_FAMILIES, Converted, converted_from
from model_compiler.dense import DenseModel, Layer
from model_compiler.errors import BadInputError, UnsupportedModelError
from model_compiler.forest import Forest, forest_from
from model_compiler.preprocess import RawColumns, trace
from model_compiler.segments import Segment, output_width

# predict = argmax(X @ coef_.T + intercept_) (classes_[d > 0] when binary)
LINEAR_CLASSIFIERS = {
    "LogisticRegression",
    "LogisticRegressionCV",
    "SGDClassifier",
    "LinearSVC",
    "RidgeClassifier",
    "RidgeClassifierCV",
    "Perceptron",
    "PassiveAggressiveClassifier",
}
# predict = X @ coef_.T + intercept_
LINEAR_REGRESSORS = {
    "LinearRegression",
    "Ridge",
    "RidgeCV",
    "Lasso",
    "LassoCV",
    "ElasticNet",
    "ElasticNetCV",
    "SGDRegressor",
    "LinearSVR",
    "HuberRegressor",
    "BayesianRidge",
}
MLP_ACTIVATIONS = {"identity", "relu", "tanh", "logistic"}


@dataclass(frozen=True)
class Analysis:
    model: DenseModel | Forest | Converted
    classifier: bool
    class_labels: list[str]
    feature_names: list[str]
    estimator: str  # e.g. "Pipeline(StandardScaler, MLPClassifier)"
    raw: RawColumns  # string columns' categories, and which columns refuse unknown / missing values
    multilabel: bool = False  # several labels per row (MLPClassifier on a 2-D indicator y)


def label_str(v: Any) -> str:
    return str(v.item() if isinstance(v, np.generic) else v)


def analyse(estimator: Any) -> Analysis:
    """Read a fitted estimator or Pipeline; UnsupportedModelError / BadInputError say why not."""
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(estimator, BaseEstimator):
        raise BadInputError(f"expected a fitted scikit-learn estimator or Pipeline, got {type(estimator).__name__}")
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise BadInputError(f"{type(estimator).__name__} is not fitted") from None
    steps: list[Any] = []
    names: list[str] = []
    final = estimator
    if isinstance(estimator, Pipeline):
        steps = [s for _, s in estimator.steps[:-1]]
        names = [n for n, _ in estimator.steps[:-1]]
        final = estimator.steps[-1][1]
        if final is None or final == "passthrough":
            raise UnsupportedModelError("Pipeline without a final estimator")
    name = type(final).__name__
    described = f"Pipeline({', '.join(type(s).__name__ for s in [*steps, final])})" if steps else name
    categorical = getattr(final, "_preprocessor", None)
    if categorical is not None and type(final).__name__.startswith("HistGradientBoosting"):
        # its categorical features pass its own OrdinalEncoder first: traced like any preprocessing step
        steps, names = [*steps, categorical], [*names, f"{type(final).__name__}'s categorical encoder"]
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is None:
        raise UnsupportedModelError(f"{type(estimator).__name__} without n_features_in_")
    raw = RawColumns()
    segments = tuple(trace(steps, int(n_features), names, raw))
    model: DenseModel | Forest | Converted
    if name in CONVERTED_FAMILIES:
        model = converted_from(final, int(n_features), segments)
    elif name in LINEAR_CLASSIFIERS or name in LINEAR_REGRESSORS:
        model = _linear(final, int(n_features), segments)
    elif name in ("MLPClassifier", "MLPRegressor"):
        model = _mlp(final, int(n_features), segments)
    else:
        model = forest_from(final, int(n_features), segments)
    width = output_width(list(segments))
    if width != getattr(final, "n_features_in_", width):
        raise UnsupportedModelError(
            f"{described}: its preprocessing gives {width} columns, {name} takes {final.n_features_in_}"
        )
    multilabel = isinstance(model, DenseModel) and model.multilabel
    classifier = model.classifier
    labels = [label_str(c) for c in final.classes_] if classifier or multilabel else []
    if len(set(labels)) != len(labels):
        raise UnsupportedModelError(f"{name} whose class labels collide as text: {labels}")
    names = [str(n) for n in getattr(estimator, "feature_names_in_", [])]
    return Analysis(model, classifier, labels, names, described, raw, multilabel)


def _f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def _linear(est: Any, n_features: int, segments: tuple[Segment, ...]) -> DenseModel:
    name = type(est).__name__
    coef = np.atleast_2d(np.asarray(est.coef_, dtype=np.float64))  # (k, n_in)
    intercept = np.atleast_1d(np.asarray(est.intercept_, dtype=np.float64)) * np.ones(coef.shape[0])
    if name in LINEAR_REGRESSORS:
        layer = Layer(_f32(coef.T), _f32(intercept), "identity")
        return DenseModel("linear", name, n_features, segments, (layer,), False, False, coef.shape[0])
    k = len(est.classes_)
    probabilistic = name.startswith("LogisticRegression") or (name == "SGDClassifier" and est.loss == "log_loss")
    if k == 2:
        # d = x.w + b -> [-d/2, d/2] under softmax is [1 - sigmoid(d), sigmoid(d)]; [-d, d] keeps argmax = (d > 0)
        half = 0.5 if probabilistic else 1.0
        w = np.concatenate([-coef, coef]) * half
        b = np.concatenate([-intercept, intercept]) * half
        layer = Layer(_f32(w.T), _f32(b), "identity")
        return DenseModel("linear", name, n_features, segments, (layer,), probabilistic, True, 2)
    # multiclass: multinomial softmax for LogisticRegression; one-vs-rest decision values otherwise
    softmax = name.startswith("LogisticRegression") and getattr(est, "multi_class", "auto") in ("auto", "multinomial")
    layer = Layer(_f32(coef.T), _f32(intercept), "identity")
    return DenseModel("linear", name, n_features, segments, (layer,), softmax, True, k)


def _mlp(est: Any, n_features: int, segments: tuple[Segment, ...]) -> DenseModel:
    name = type(est).__name__
    if est.activation not in MLP_ACTIVATIONS:
        raise UnsupportedModelError(f"{name}(activation={est.activation!r})")
    hidden = [
        Layer(_f32(w), _f32(b), est.activation) for w, b in zip(est.coefs_[:-1], est.intercepts_[:-1], strict=True)
    ]
    w_out = np.asarray(est.coefs_[-1], dtype=np.float64)
    b_out = np.asarray(est.intercepts_[-1], dtype=np.float64)
    if name == "MLPRegressor":
        if est.out_activation_ != "identity":
            raise UnsupportedModelError(f"{name}(loss={est.loss!r}) (output activation {est.out_activation_!r})")
        layers = (*hidden, Layer(_f32(w_out), _f32(b_out), "identity"))
        return DenseModel("mlp", name, n_features, segments, layers, False, False, w_out.shape[1])
    if est.out_activation_ == "logistic":
        y_type = getattr(est._label_binarizer, "y_type_", "binary")
        if y_type == "multilabel-indicator":  # one sigmoid per label: the artifact outputs the probabilities
            layers = (*hidden, Layer(_f32(w_out), _f32(b_out), "logistic"))
            return DenseModel("mlp", name, n_features, segments, layers, False, False, w_out.shape[1], True)
        if y_type != "binary":
            raise UnsupportedModelError(f"{name} with {y_type} targets")
        # binary: sigmoid(z) == softmax([-z/2, z/2])[1]
        w_out = np.concatenate([-w_out, w_out], axis=1) * 0.5
        b_out = np.concatenate([-b_out, b_out]) * 0.5
    elif est.out_activation_ != "softmax":
        raise UnsupportedModelError(f"{name} with output activation {est.out_activation_!r}")
    layers = (*hidden, Layer(_f32(w_out), _f32(b_out), "identity"))
    return DenseModel("mlp", name, n_features, segments, layers, True, True, len(est.classes_))
