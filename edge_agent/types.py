"""Shared type aliases and the structural types the agent needs from its runtime.

The agent's modules code against these Protocols rather than importing `edge_agent.serving.runtime` at module
level, so the pure core (and its unit tests) run without onnxruntime, and a test can plug in a small fake
model. `edge_agent.serving.runtime.load_model` / `edge_agent.serving.selftest.run_self_test` satisfy them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from protocols.v1 import messages_pb2 as pb


class PredictionLike(Protocol):
    @property
    def labels(self) -> list[str] | None: ...

    @property
    def values(self) -> np.ndarray | None: ...

    @property
    def scores(self) -> np.ndarray | None: ...


class LoadedModelLike(Protocol):
    runtime: str
    n_features: int

    def predict(self, x: np.ndarray) -> Any:  # returns a PredictionLike; thread-safe
        ...


class SelfTestResultLike(Protocol):
    @property
    def passed(self) -> bool: ...

    @property
    def detail(self) -> str: ...


LoadModelFn = Callable[[pb.Artifact, bytes, pb.IoSchema], LoadedModelLike]
SelfTestFn = Callable[[LoadedModelLike, pb.SelfTest, pb.IoSchema], SelfTestResultLike]
RuntimesFn = Callable[[], list[str]]
# raises RuntimeCrashedError if loading (+ self-testing) the artifact kills a child process
PrecheckFn = Callable[[pb.Artifact, bytes, pb.IoSchema, "pb.SelfTest | None"], None]
