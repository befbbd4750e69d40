"""The model slot: which model answers predictions, swapped atomically; and `as_rows`, the input check
in front of it.

`predict` reads the slot exactly once and uses that model to the end, so a call in flight during a swap
is answered by the old model, every call after it by the new one, and none sees a half-loaded model
(a model enters the slot only after it loaded and passed its self-test). No lock on the read path.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.errors import BadInputError, NoModelError
from edge_agent.types import LoadedModelLike
from edge_agent.update.journal import InstalledModel
from protocols.v1 import messages_pb2 as pb


@dataclass(frozen=True, eq=False)
class ServingModel:
    model: LoadedModelLike
    installed: InstalledModel
    manifest: pb.Manifest
    ref: pb.ModelRef

    @classmethod
    def of(cls, model: LoadedModelLike, installed: InstalledModel) -> ServingModel:
        return cls(model, installed, installed.manifest(), installed.ref())

    @property
    def n_features(self) -> int:
        return int(self.model.n_features)


class ModelSlot:
    def __init__(self) -> None:
        self.current: ServingModel | None = None  # read-only outside swap(); a plain attribute: read per predict
        self._swap_lock = threading.Lock()

    def swap(self, new: ServingModel | None) -> ServingModel | None:
        """Put `new` in the slot; return the model it replaces (still answering the calls it began)."""
        with self._swap_lock:
            old, self.current = self.current, new
        return old

    def predict(self, x: np.ndarray) -> tuple[ServingModel, Any]:
        serving = self.current  # the one read: this call keeps this model, whatever swaps meanwhile
        if serving is None:
            raise NoModelError("no model is active on this device yet")
        return serving, serving.model.predict(x)


def as_rows(x: Any) -> np.ndarray:
    """x as a float32 batch of rows (one row becomes a batch of one); BadInputError if it is not numeric."""
    try:
        rows = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"input is not numeric: {exc}") from None
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    if rows.ndim != 2:
        raise BadInputError(f"expected one row or a 2-D batch of rows, got an array of shape {rows.shape}")
    return rows
