"""The one inference interface the agent uses, with adapters for onnxruntime and the TFLite runtime.

`load_model(artifact, data, io)` turns verified artifact bytes into a `LoadedModel`; `predict(x)` maps a
float32 batch `(rows, n_features)` to a `Prediction`. The runtimes are imported lazily, so a device with
only one of them installed still works; `available_runtimes()` says which are importable.

Artifact contract (kept by `model_compiler`): one float32 input `[-1, n_features]`;
`artifact.predicted_output` names the tensor holding predictions (classifiers: int64 or string labels,
turned into `str`; regressors: values); when it is empty, a classifier's label is
`io.class_labels[argmax(scores)]` taken from `artifact.scores_output`.

Errors (both in the agent's tree, `edge_agent.errors`):
    RuntimeLoadError   code "load_failed"   the runtime is missing or cannot load the artifact
    BadInputError      code "bad_input"     wrong shape, dtype or non-finite values (a ValueError)
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge_agent.errors import BadInputError, RuntimeLoadError
from protocols.v1 import messages_pb2 as pb

ONNXRUNTIME = "onnxruntime"
TFLITE = "tflite"
# preference order when a device has both
_RUNTIME_MODULES = {ONNXRUNTIME: "onnxruntime", TFLITE: "ai_edge_litert"}


# multilabel models: a row's label is its labels joined by this ("" for none)
MULTILABEL_SEPARATOR = ","
# the runtime's input errors are the agent's BadInputError; `InputError` is the name this module used
InputError = BadInputError


@dataclass(frozen=True)
class Prediction:
    labels: list[str] | None  # classifiers: one label per row
    values: np.ndarray | None  # regressors: float32, (rows,) or (rows, k)
    scores: np.ndarray | None  # classifiers with a scores output: (rows, n_classes)

    def __len__(self) -> int:
        if self.labels is not None:
            return len(self.labels)
        if self.values is not None:
            return int(self.values.shape[0])
        return 0 if self.scores is None else int(self.scores.shape[0])


class LoadedModel(Protocol):
    runtime: str
    n_features: int

    def predict(self, x: np.ndarray) -> Prediction:
        """x (rows, n_features), cast to float32; raises BadInputError. Safe to call from several threads."""
        ...


def available_runtimes() -> list[str]:
    """Runtimes importable here, in preference order."""
    return [name for name, module in _RUNTIME_MODULES.items() if importlib.util.find_spec(module) is not None]


def runtime_for(artifact: pb.Artifact) -> str:
    if artifact.runtime:
        return artifact.runtime
    if artifact.format == pb.ARTIFACT_FORMAT_TFLITE:
        return TFLITE
    return ONNXRUNTIME


@dataclass(frozen=True)
class RuntimeTuning:
    """How a runtime may use the board. The defaults suit a small device serving one small model: one
    thread per call (a pool would mostly wait on the GIL and cost a stack each), no spinning (a spinning
    pool burns a core between calls), and no memory arena / pattern planning, which keep buffers of the
    largest batch seen for the process's lifetime (tens of MB) to save a malloc that costs microseconds."""

    threads: int = 1
    spinning: bool = False
    memory_arena: bool = False
    memory_pattern: bool = False

    @classmethod
    def stock(cls) -> RuntimeTuning:
        """onnxruntime's own defaults (as the agent ran before): for comparison in benchmarks/agent.py."""
        return cls(threads=1, spinning=True, memory_arena=True, memory_pattern=True)


def load_model(
    artifact: pb.Artifact,
    data: bytes,
    io: pb.IoSchema,
    *,
    threads: int | None = None,
    tuning: RuntimeTuning | None = None,
) -> LoadedModel:
    """Load verified artifact bytes in the runtime the artifact names. Raises RuntimeLoadError."""
    tuning = tuning or RuntimeTuning()
    if threads is not None:
        tuning = RuntimeTuning(threads, tuning.spinning, tuning.memory_arena, tuning.memory_pattern)
    runtime = runtime_for(artifact)
    if runtime not in _RUNTIME_MODULES:
        raise RuntimeLoadError(f"unknown runtime {runtime!r} (known: {', '.join(_RUNTIME_MODULES)})")
    if runtime not in available_runtimes():
        raise RuntimeLoadError(f"runtime {runtime!r} is not installed on this device")
    if io.n_features <= 0:
        raise RuntimeLoadError("io schema has no n_features")
    if io.task == pb.TASK_CLASSIFICATION and not artifact.predicted_output and not artifact.scores_output:
        raise RuntimeLoadError("classifier artifact names neither a predicted nor a scores output")
    if io.task != pb.TASK_CLASSIFICATION and not artifact.predicted_output:
        raise RuntimeLoadError("regressor artifact names no predicted output")
    if not artifact.predicted_output and not io.class_labels:
        raise RuntimeLoadError("labels come from scores, but the io schema has no class_labels")
    if runtime == ONNXRUNTIME:
        return _OnnxModel(artifact, data, io, tuning)
    return _TfliteModel(artifact, data, io, tuning.threads)


# ---------------------------------------------------------------- shared pieces


class _OutputDecoder:
    """Turns the raw output tensors of a run into a Prediction, per the artifact contract."""

    def __init__(self, artifact: pb.Artifact, io: pb.IoSchema) -> None:
        self.classifier = io.task == pb.TASK_CLASSIFICATION
        self.multilabel = io.task == pb.TASK_MULTILABEL
        self.predicted = artifact.predicted_output
        self.scores = artifact.scores_output if self.classifier else ""
        self.class_labels = list(io.class_labels)

    def names(self) -> list[str]:
        return [n for n in (self.predicted, self.scores) if n]

    def decode(self, outputs: dict[str, Any], rows: int) -> Prediction:
        scores = None
        if self.scores:
            scores = _as_scores(outputs[self.scores], self.class_labels)
        if not self.classifier:
            values = np.asarray(outputs[self.predicted], dtype=np.float32)
            if self.multilabel:  # per-label probabilities: a row's labels are those above one half
                values = values.reshape(rows, -1)
                on = values > 0.5
                labels = [MULTILABEL_SEPARATOR.join(self.class_labels[j] for j in np.flatnonzero(r)) for r in on]
                return Prediction(labels=labels, values=values, scores=values)
            if values.ndim == 2 and values.shape[1] == 1:
                values = values[:, 0]
            return Prediction(labels=None, values=values.reshape(rows, *values.shape[1:]), scores=None)
        if self.predicted:
            raw = np.asarray(outputs[self.predicted]).reshape(rows)
            labels = [_label_str(v) for v in raw]
        else:
            assert scores is not None
            labels = [self.class_labels[i] for i in scores.argmax(axis=1).tolist()]
        return Prediction(labels=labels, values=None, scores=scores)


def _label_str(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return str(v.item() if isinstance(v, np.generic) else v)


def _as_scores(raw: Any, class_labels: list[str]) -> np.ndarray:
    # A ZipMap output (list of {label: prob}) is accepted too, ordered by the schema's class labels.
    if isinstance(raw, list) and raw and isinstance(raw[0], dict):
        keys = {str(k): k for k in raw[0]}
        return np.array([[row[keys[c]] for c in class_labels] for row in raw], dtype=np.float32)
    scores = np.asarray(raw, dtype=np.float32)
    return scores.reshape(scores.shape[0], -1) if scores.ndim != 2 else scores


def check_input(x: Any, n_features: int, accepts_missing: bool) -> np.ndarray:
    """The batch as a contiguous float32 (rows, n_features) array, or BadInputError saying what is wrong."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise BadInputError(f"input is not an array: {exc}") from None
    if x.ndim != 2 or x.shape[1] != n_features or x.shape[0] == 0:
        raise BadInputError(f"expected shape (rows>=1, {n_features}), got {tuple(x.shape)}")
    if x.dtype.kind not in "fiub":
        raise BadInputError(f"expected a numeric (float32) tensor, got dtype {x.dtype}")
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        with np.errstate(over="ignore"):  # too large for float32 -> inf, refused below
            x = np.ascontiguousarray(x, dtype=np.float32)
    # one float64 sum (it cannot overflow on float32 values) is NaN or inf exactly when an element is
    if not np.isfinite(np.add.reduce(x, axis=None, dtype=np.float64)):
        if accepts_missing:
            if np.isinf(x).any():
                raise BadInputError("input holds infinite values (or values too large for float32)")
        else:
            raise BadInputError("input holds NaN or infinite values (or values too large for float32)")
    return x


# ---------------------------------------------------------------- onnxruntime


def session_options(tuning: RuntimeTuning) -> Any:
    """onnxruntime SessionOptions for `tuning` (tests read them back)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = tuning.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = tuning.memory_arena
    options.enable_mem_pattern = tuning.memory_pattern
    spinning = "1" if tuning.spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    return options


class _OnnxModel:
    runtime = ONNXRUNTIME

    def __init__(self, artifact: pb.Artifact, data: bytes, io: pb.IoSchema, tuning: RuntimeTuning) -> None:
        import onnxruntime as ort

        options = session_options(tuning)
        options.log_severity_level = 3  # errors only: the agent reports load failures itself
        try:
            self._session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad bytes
            raise RuntimeLoadError(f"onnxruntime cannot load the artifact: {exc}") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise RuntimeLoadError(f"expected one input tensor, the artifact has {len(inputs)}")
        self._input = inputs[0].name
        shape = inputs[0].shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != io.n_features):
            raise RuntimeLoadError(f"artifact input shape {shape} does not match n_features={io.n_features}")
        self.n_features = int(io.n_features)
        self._accepts_missing = bool(io.accepts_missing)
        self._decoder = _OutputDecoder(artifact, io)
        present = {o.name for o in self._session.get_outputs()}
        missing = [n for n in self._decoder.names() if n not in present]
        if missing:
            raise RuntimeLoadError(f"artifact has no output named {missing} (has {sorted(present)})")
        self._outputs = self._decoder.names()

    def predict(self, x: np.ndarray) -> Prediction:
        batch = check_input(x, self.n_features, self._accepts_missing)
        # InferenceSession.run is thread-safe; no lock needed.
        try:
            results = self._session.run(self._outputs, {self._input: batch})
        except Exception as exc:
            raise BadInputError(f"onnxruntime rejected the input: {exc}") from None
        return self._decoder.decode(dict(zip(self._outputs, results, strict=True)), batch.shape[0])


# ---------------------------------------------------------------- TFLite (ai-edge-litert)


class _TfliteModel:
    runtime = TFLITE

    def __init__(self, artifact: pb.Artifact, data: bytes, io: pb.IoSchema, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interpreter = Interpreter(model_content=bytes(data), num_threads=threads)
            self._interpreter.allocate_tensors()
        except Exception as exc:  # the interpreter raises ValueError/RuntimeError for bad flatbuffers
            raise RuntimeLoadError(f"TFLite cannot load the artifact: {exc}") from None
        inputs = self._interpreter.get_input_details()
        if len(inputs) != 1:
            raise RuntimeLoadError(f"expected one input tensor, the artifact has {len(inputs)}")
        self._input = inputs[0]["index"]
        shape = list(inputs[0]["shape"])
        if len(shape) != 2 or shape[1] != io.n_features:
            raise RuntimeLoadError(f"artifact input shape {shape} does not match n_features={io.n_features}")
        if inputs[0]["dtype"] != np.float32:
            raise RuntimeLoadError(f"artifact input dtype is {inputs[0]['dtype']}, expected float32")
        self.n_features = int(io.n_features)
        self._accepts_missing = bool(io.accepts_missing)
        self._decoder = _OutputDecoder(artifact, io)
        by_name = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}
        missing = [n for n in self._decoder.names() if n not in by_name]
        if missing:
            raise RuntimeLoadError(f"artifact has no output named {missing} (has {sorted(by_name)})")
        self._outputs = {n: by_name[n] for n in self._decoder.names()}
        self._rows = int(shape[0])
        # One interpreter owns its tensors: runs (and resizes) are serialised.
        self._lock = threading.Lock()

    def predict(self, x: np.ndarray) -> Prediction:
        batch = check_input(x, self.n_features, self._accepts_missing)
        rows = batch.shape[0]
        with self._lock:
            try:
                if rows != self._rows:
                    self._interpreter.resize_tensor_input(self._input, [rows, self.n_features], strict=False)
                    self._interpreter.allocate_tensors()
                    self._rows = rows
                self._interpreter.set_tensor(self._input, batch)
                self._interpreter.invoke()
                outputs = {n: self._interpreter.get_tensor(i) for n, i in self._outputs.items()}
            except (ValueError, RuntimeError) as exc:
                raise BadInputError(f"TFLite rejected the input: {exc}") from None
        return self._decoder.decode(outputs, rows)


# ---------------------------------------------------------------- in-memory adapter (for tests)


class FunctionModel:
    """A LoadedModel backed by a Python function: for tests of code above the runtime (agent, simulator).

    `fn(x)` gets the checked float32 batch and returns a Prediction.
    """

    def __init__(
        self,
        n_features: int,
        fn: Callable[[np.ndarray], Prediction],
        *,
        runtime: str = "memory",
        accepts_missing: bool = False,
    ) -> None:
        self.runtime = runtime
        self.n_features = n_features
        self._fn = fn
        self._accepts_missing = accepts_missing

    def predict(self, x: np.ndarray) -> Prediction:
        return self._fn(check_input(x, self.n_features, self._accepts_missing))
