"""A small mixed-type dataset as a pandas DataFrame (floats, integers, string categories with missing
values) and the ColumnTransformer pipeline users put in front of a model on such data."""

from __future__ import annotations

from typing import Any

import numpy as np

CITIES = ["lille", "lyon", "nice", "paris"]
PLANS = ["free", "pro", "team"]


def mixed_frame(n: int = 900, seed: int = 0) -> tuple[Any, np.ndarray]:
    """(X, y): age (float, 5% missing), visits (integer), city (string), plan (string, 10% missing);
    y depends on all four."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n)
    visits = rng.integers(0, 30, n)
    city = rng.choice(CITIES, n)
    plan = rng.choice(PLANS, n).astype(object)
    plan[rng.random(n) < 0.1] = np.nan
    score = (age - 40) / 12 + (visits - 15) / 10 + np.where(city == "nice", 1.5, 0) - np.where(plan == "free", 1, 0)
    y = (score + rng.normal(0, 0.5, n) > 0).astype(np.int64)
    age[rng.random(n) < 0.05] = np.nan
    frame = pd.DataFrame({"age": age, "visits": visits, "city": city, "plan": pd.Series(plan, dtype=object)})
    return frame, y


def mixed_front(*, city_unknown: str = "ignore", scale: bool = True) -> Any:
    """ColumnTransformer: numbers imputed (and scaled), city one-hot, plan imputed then ordinal-encoded."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    numbers = make_pipeline(SimpleImputer(strategy="median"), StandardScaler()) if scale else SimpleImputer()
    return ColumnTransformer(
        [
            ("num", numbers, ["age", "visits"]),
            ("city", OneHotEncoder(handle_unknown=city_unknown), ["city"]),
            ("plan", make_pipeline(SimpleImputer(strategy="most_frequent"), OrdinalEncoder()), ["plan"]),
        ]
    )
