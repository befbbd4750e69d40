"""Helpers for the compiler's tests (imported as a plain module: test helpers, not fixtures)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from model_compiler.families import label_str


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def split(x: np.ndarray, y: np.ndarray) -> Split:
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    return Split(x_train, x_test, y_train, y_test)


def fit_quietly(estimator: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """Fit without ConvergenceWarning: the tests train small models on few iterations on purpose."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(x, y)


def sk_labels(estimator: Any, x: np.ndarray) -> list[str]:
    return [label_str(v) for v in estimator.predict(x)]
