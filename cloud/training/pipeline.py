"""The training pipeline: load data -> train -> evaluate -> compile -> sign + register.

Each run is recorded in the metadata store with its inputs (dataset hash, code version, parameters),
outputs (model version, metrics) and per-step timings, so every model version has its lineage.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy.engine import Engine

from cloud import registry
from cloud.db import RunStatus, session_scope
from cloud.db.tables import DatasetCreate, PipelineRunCreate
from cloud.registry.artifacts import ArtifactStore
from protocols.signing import Signer

DATASETS = ("digits", "breast_cancer", "iris", "wine")
ESTIMATORS = ("logreg", "mlp", "random_forest")


@dataclass(frozen=True)
class DatasetSplit:
    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]
    # rows kept apart from both for a simulated field to draw from (the demo's devices): neither trained on nor
    # evaluated on, so a retrain on what the field sent back has not seen the held-out rows it is judged on
    X_pool: np.ndarray = field(default_factory=lambda: np.empty((0, 0), dtype=np.float32))
    y_pool: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def content_hash(self) -> str:
        arrays = [self.X_train, self.y_train, self.X_test, self.y_test]
        if len(self.X_pool):  # without a pool, the hash a two-way split always had
            arrays += [self.X_pool, self.y_pool]
        return registry.content_hash(*(a.tobytes() for a in arrays))

    def profile_rows(self, profile_from: str) -> np.ndarray:
        """The rows a reference profile (drift's baseline) describes."""
        rows = {"train": self.X_train, "heldout": self.X_test, "pool": self.X_pool}[profile_from]
        if not len(rows):
            raise ValueError(f"profile_from={profile_from!r} but the split has no such rows (pool_size is 0)")
        return rows


@dataclass(frozen=True)
class TrainingConfig:
    model_id: str = "digits-classifier"
    dataset: str = "digits"
    estimator: str = "logreg"
    params: dict[str, Any] = field(default_factory=dict)
    test_size: float = 0.3
    pool_size: float = 0.0  # a share of the rows set apart for a simulated field (`DatasetSplit.X_pool`)
    seed: int = 0
    target: str = "onnx"
    quantize: str = "int8"
    # the rows the reference profile (drift's baseline) describes: the training rows, or the pool when the
    # field is simulated by drawing from it (the demo): a profile of other rows than the ones the devices
    # draw from makes every device share those rows' own deviation from it, as drift
    profile_from: Literal["train", "heldout", "pool"] = "train"
    manifest_valid_days: float = 90.0  # CloudSettings.manifest_valid_days; the refresher re-signs before it lapses


@dataclass
class PipelineResult:
    run_id: str
    model_id: str
    version: str
    sequence: int
    metrics: dict[str, float]
    step_timings_s: dict[str, float]
    split: DatasetSplit
    artifact_names: list[str]


def load_dataset(name: str, *, test_size: float, seed: int, pool_size: float = 0.0) -> DatasetSplit:
    """One of scikit-learn's bundled datasets (no download), split reproducibly into train and held-out rows,
    and with `pool_size` > 0 a third part, disjoint from both, for a simulated field (shares of all rows)."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if not 0 <= pool_size < 1 or not 0 < test_size < 1 or test_size + pool_size >= 1:
        raise ValueError(f"test_size {test_size} and pool_size {pool_size} must leave rows to train on")
    bunch = getattr(datasets, f"load_{name}")()
    X = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target)
    names = [str(n) for n in getattr(bunch, "feature_names", [f"f{i}" for i in range(X.shape[1])])]
    pool: dict[str, np.ndarray] = {}
    if pool_size > 0:
        X, X_pool, y, y_pool = train_test_split(X, y, test_size=pool_size, random_state=seed, stratify=y)
        pool = {"X_pool": X_pool, "y_pool": y_pool}
        test_size = test_size / (1 - pool_size)  # of what the pool left
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    return DatasetSplit(name, X_train, y_train, X_test, y_test, names, **pool)


def build_estimator(kind: str, params: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed, **params))
    if kind == "mlp":
        defaults = {"hidden_layer_sizes": (64,), "max_iter": 400}
        return make_pipeline(StandardScaler(), MLPClassifier(random_state=seed, **{**defaults, **params}))
    if kind == "random_forest":
        return RandomForestClassifier(random_state=seed, **{"n_estimators": 30, "max_depth": 10, **params})
    raise ValueError(f"unknown estimator {kind!r}; choose one of {', '.join(ESTIMATORS)}")


def code_version() -> str:
    """The git commit of the code that trained the model, marked dirty when the tree has changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class _Steps:
    def __init__(self, progress: Callable[[str], None]) -> None:
        self.timings: dict[str, float] = {}
        self._progress = progress

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self._progress(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - started, 4)


def run_training_pipeline(
    engine: Engine,
    store: ArtifactStore,
    signer: Signer,
    config: TrainingConfig,
    *,
    progress: Callable[[str], None] = lambda _step: None,
) -> PipelineResult:
    from sklearn.metrics import accuracy_score, f1_score

    from model_compiler import compile_estimator

    steps = _Steps(progress)
    with steps.step("load data"):
        split = load_dataset(config.dataset, test_size=config.test_size, seed=config.seed, pool_size=config.pool_size)
        reference_X = split.profile_rows(config.profile_from)
    version_of_code = code_version()  # git runs once per pipeline, not per use
    parameters = {
        "estimator": config.estimator, **config.params, "test_size": config.test_size, "seed": config.seed,
        "target": config.target, "quantize": config.quantize, "profile_from": config.profile_from,
        **({"pool_size": config.pool_size} if config.pool_size else {}),  # a two-way split's parameters as they were
    }
    with session_scope(engine) as session:
        registry.register_dataset(session, DatasetCreate(
            content_hash=split.content_hash, name=config.dataset,
            n_rows=len(split.X_train) + len(split.X_test) + len(split.X_pool), n_features=split.X_train.shape[1],
        ))
        run = registry.start_run(session, PipelineRunCreate(
            pipeline="train", code_version=version_of_code, parameters=parameters, dataset_hash=split.content_hash,
        ))
        run_id = run.id
    try:
        with steps.step("train"):
            estimator = build_estimator(config.estimator, config.params, config.seed).fit(split.X_train, split.y_train)
        with steps.step("evaluate"):
            predicted = estimator.predict(split.X_test)
            metrics = {
                "accuracy": float(accuracy_score(split.y_test, predicted)),
                "f1_macro": float(f1_score(split.y_test, predicted, average="macro")),
            }
        with steps.step("compile"):
            compiled = compile_estimator(
                estimator, split.X_test, split.y_test, target=config.target, quantize=config.quantize,
                reference_X=reference_X, calibration_X=split.X_train,  # INT8 ranges of the rows it learnt
            )
        with steps.step("sign and register"):
            manifest = compiled.fragment
            manifest.model_id = config.model_id
            manifest.lineage.update({
                "dataset": config.dataset, "dataset_hash": split.content_hash, "run_id": run_id,
                "code_version": version_of_code, "estimator": config.estimator,
                "parameters_sha256": hashlib.sha256(repr(sorted(parameters.items())).encode()).hexdigest(),
            })
            for key, value in metrics.items():
                manifest.metrics[key] = value
            blobs = {built.artifact.name: built.data for built in compiled.artifacts}
            with session_scope(engine) as session:
                version = registry.register_model_version(
                    session, manifest, blobs, store=store, signer=signer, run_id=run_id,
                    valid_days=config.manifest_valid_days,
                )
                result_version, result_sequence = version.version, version.sequence
    except Exception as exc:
        with session_scope(engine) as session:
            registry.finish_run(session, run_id, status=RunStatus.FAILED, step_timings_s=steps.timings, error=str(exc))
        raise
    with session_scope(engine) as session:
        registry.finish_run(session, run_id, metrics=metrics, step_timings_s=steps.timings)
    return PipelineResult(
        run_id=run_id, model_id=config.model_id, version=result_version, sequence=result_sequence,
        metrics=metrics, step_timings_s=steps.timings, split=split, artifact_names=list(blobs),
    )
