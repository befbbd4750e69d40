"""Small datasets for the compiler's tests: models are fitted on one part and checked on the other."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from compiler_kit import Split, split
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from threadpoolctl import threadpool_limits


@pytest.fixture(scope="session", autouse=True)
def _one_native_thread() -> Iterator[None]:
    """OpenMP/BLAS on one thread: on a shared 2-core machine, spinning worker threads (HistGradientBoosting
    fits) slow a test down a hundredfold when the cores are busy."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="session")
def digits() -> Split:
    return split(*load_digits(return_X_y=True))


@pytest.fixture(scope="session")
def cancer() -> Split:
    return split(*load_breast_cancer(return_X_y=True))


@pytest.fixture(scope="session")
def diabetes() -> Split:
    return split(*load_diabetes(return_X_y=True))
