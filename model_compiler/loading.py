"""Reading the compiler's inputs from disk: a joblib-saved estimator and an .npz of arrays X and y.

A joblib file is a pickle: loading one runs code from it. Compile only models you trust (your own
training pipeline's output); the compiler is not a sandbox.
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


def load_data(path: str | Path, *, need_y: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Arrays X (rows, features) and y (rows,) from an .npz file; y only if need_y."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"data file not found: {path}")
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
