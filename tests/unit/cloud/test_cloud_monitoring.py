from __future__ import annotations

import pytest

from cloud.monitoring import histogram_quantile


def test_histogram_quantile_interpolates_within_a_bucket() -> None:
    bounds, counts = [100.0, 200.0, 400.0], [0, 10, 10, 0]
    assert histogram_quantile(bounds, counts, 0.5) == pytest.approx(200.0)
    assert histogram_quantile(bounds, counts, 0.25) == pytest.approx(150.0)
    assert histogram_quantile(bounds, counts, 0.95) == pytest.approx(380.0)


def test_histogram_quantile_edges() -> None:
    assert histogram_quantile([100.0], [0, 5], 0.5) == 100.0  # open-ended bucket: its lower bound
    assert histogram_quantile([100.0], [4, 0], 0.5) == pytest.approx(50.0)
    assert histogram_quantile([100.0], [0, 0], 0.5) is None
    assert histogram_quantile([100.0, 200.0], [1, 1], 0.5) is None  # malformed: needs len(bounds) + 1 counts
