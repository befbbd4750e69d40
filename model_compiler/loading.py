"""Reading the compiler's inputs from disk: a joblib-saved estimator, and data: an .npz of arrays X
and y, or mixed-type data as a pandas DataFrame in a CSV, Parquet or pickle/joblib file, whose label
column (`label`, default "y") is y and whose other columns are X.

A joblib or pickle file is a pickle: loading one runs code from it. Compile only models and data you
trust (your own training pipeline's output); the compiler is not a sandbox.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from model_compiler.errors import BadInputError


def load_estimator(path: str | Path) -> Any:
    import joblib

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"model file not found: {path}")
    try:
        return joblib.load(path)
    except Exception as exc:  # unpickling fails in many ways (truncated file, missing class, not a pickle)
        raise BadInputError(f"cannot read {path} as a joblib-saved estimator: {type(exc).__name__}: {exc}") from None


FRAME_SUFFIXES = (".csv", ".parquet", ".pq", ".pkl", ".pickle", ".joblib")
DEFAULT_LABEL = "y"


def load_data(path: str | Path, *, need_y: bool = True, label: str = DEFAULT_LABEL) -> tuple[Any, np.ndarray | None]:
    """X and y from an .npz file (arrays X (rows, features), y (rows,)) or a DataFrame file (see the
    module docstring: X is then a DataFrame); y only if need_y."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"data file not found: {path}")
    if path.suffix.lower() in FRAME_SUFFIXES:
        return _load_frame(path, need_y=need_y, label=label)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BadInputError(f"cannot read {path} as .npz: {exc}") from None
    if "X" not in arrays or (need_y and "y" not in arrays):
        wanted = "X and y" if need_y else "X"
        raise BadInputError(f"{path} must hold arrays {wanted}; it has {sorted(arrays) or 'none'}")
    x = arrays["X"]
    if x.ndim != 2 or x.dtype.kind not in "fiub":
        raise BadInputError(f"{path}: X must be a 2-D numeric array, got shape {x.shape} dtype {x.dtype}")
    y = arrays.get("y") if need_y else None
    if y is not None and y.shape[0] != x.shape[0]:
        raise BadInputError(f"{path}: X has {x.shape[0]} rows but y has {y.shape[0]}")
    return x, y


def _read_frame(path: Path) -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise BadInputError(f"{path}: reading {path.suffix} data needs pandas (pip install pandas)") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        import joblib

        return joblib.load(path)
    except ImportError as exc:  # Parquet without pyarrow / fastparquet
        raise BadInputError(f"cannot read {path}: {exc}") from None
    except Exception as exc:  # parsers and unpickling fail in many ways
        raise BadInputError(f"cannot read {path} as {suffix[1:]} data: {type(exc).__name__}: {exc}") from None


def _load_frame(path: Path, *, need_y: bool, label: str) -> tuple[Any, np.ndarray | None]:
    data = _read_frame(path)
    if isinstance(data, dict) and "X" in data:  # a pickled {"X": DataFrame, "y": ...}
        x, y = data["X"], data.get("y")
    elif hasattr(data, "columns") and hasattr(data, "drop"):
        names = [str(c) for c in data.columns]
        if label in names:
            x, y = data.drop(columns=[label]), data[label].to_numpy()
        else:
            x, y = data, None
    else:
        raise BadInputError(f"{path} holds a {type(data).__name__}, not a DataFrame (or a dict with X and y)")
    if not hasattr(x, "columns"):
        raise BadInputError(f"{path}: X is a {type(x).__name__}, not a DataFrame")
    if need_y and y is None:
        raise BadInputError(f"{path} has no label column {label!r} (choose it with --label)")
    if y is not None:
        y = np.asarray(y)
        if y.shape[0] != len(x):
            raise BadInputError(f"{path}: X has {len(x)} rows but y has {y.shape[0]}")
    x.columns = [str(c) for c in x.columns]
    return x, (y if need_y else None)
