"""Small datasets for the compiler's tests: models are fitted on one part and checked on the other."""

from __future__ import annotations

import pytest
from compiler_kit import Split, split
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits


@pytest.fixture(scope="session")
def digits() -> Split:
    return split(*load_digits(return_X_y=True))


@pytest.fixture(scope="session")
def cancer() -> Split:
    return split(*load_breast_cancer(return_X_y=True))


@pytest.fixture(scope="session")
def diabetes() -> Split:
    return split(*load_diabetes(return_X_y=True))
