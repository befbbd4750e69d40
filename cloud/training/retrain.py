"""Champion/challenger retraining: field data in, a better model out, or nothing.

snapshot   the model's labelled field samples become a dataset version, split (by a hash of each row's
           id) into a train part and a held-out part, each a dataset version of its own
train      a challenger with the champion's recipe on its reference training data plus the field train part
compile    as the devices will run it (the champion is judged as it runs too: `evaluation`)
evaluate   champion and challenger on the held-out reference rows and on the held-out field rows (paired)
decide     `champion.judge`: only a challenger that wins by the policy's margin goes on
register   sign it, register it with its lineage (every dataset version it read is a `RunInput`), and point
           the `challenger` alias at it; then, by policy, hand it to a gated canary rollout or leave it
           for an operator to approve (`edgefleet pipeline rollout`)

The run is recorded whatever the outcome: a challenger that loses leaves a succeeded run with its figures
and no model version. Promotion (champion and production aliases) is its own step: `promote`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from cloud import registry
from cloud.db import RunStatus, session_scope
from cloud.db.tables import DatasetCreate, Deployment, DeploymentCreate, Device, PipelineRunCreate, RunInput
from cloud.errors import InvalidRequestError, NotFoundError
from cloud.registry import aliases, field_data
from cloud.registry.artifacts import ArtifactStore
from cloud.rollout.policy import GateRequest, RolloutPolicy
from cloud.training import champion as rule
from cloud.training.evaluation import predict_labels
from cloud.training.pipeline import DatasetSplit, build_estimator, code_version, load_dataset
from cloud.training.triggers import Trigger
from protocols.signing import Signer


@dataclass(frozen=True)
class RetrainPolicy:
    margin: rule.MarginPolicy = field(default_factory=rule.MarginPolicy)
    eval_share: float = 0.5  # of the field rows, held out to judge on
    on_win: Literal["canary", "approval"] = "canary"
    canary: float = 1  # devices (>= 1) or a share (< 1) in the canary wave
    dwell_s: float = 60.0
    min_inferences: int = 200  # per gate judgement, as in any rollout
    gate_overrides: dict[str, float] = field(default_factory=dict)  # other GateRequest fields, by name
    manifest_valid_days: float = 90.0


@dataclass
class RetrainResult:
    run_id: str
    model_id: str
    trigger: Trigger
    champion: str
    challenger: str | None  # the registered version; None when it did not win
    verdict: rule.Verdict
    field_eval: rule.Comparison
    reference: rule.Comparison
    datasets: dict[str, str]  # role -> content hash
    step_timings_s: dict[str, float]
    deployment_id: str | None = None
    dropped_labels: int = 0  # field labels that are none of the model's classes


class _Timer:
    def __init__(self, progress: Callable[[str], None]) -> None:
        self.timings: dict[str, float] = {}
        self._progress = progress
        self._name = ""
        self._started = 0.0

    def __call__(self, name: str) -> None:
        self._stop()
        self._progress(name)
        self._name, self._started = name, time.perf_counter()

    def _stop(self) -> None:
        if self._name:
            self.timings[self._name] = round(time.perf_counter() - self._started, 4)
            self._name = ""

    def done(self) -> dict[str, float]:
        self._stop()
        return self.timings


def devices_running(session: Session, model_id: str) -> list[str]:
    """The devices whose active model is `model_id`: where a challenger's canary goes by default."""
    query = select(Device.id).where(Device.active_model_id == model_id)
    return sorted(session.exec(query))


def current_champion(session: Session, model_id: str) -> str:
    """The champion alias's version; the first time, the latest version becomes champion (recorded)."""
    try:
        return aliases.resolve(session, model_id, aliases.CHAMPION)
    except NotFoundError:
        latest = registry.get_model_version(session, model_id)
        aliases.move(session, model_id, aliases.CHAMPION, latest.version, actor="system",
                     reason="first retrain: the latest version is the champion")  # fmt: skip
        return latest.version


def recipe_of(session: Session, model_id: str, version: str) -> dict[str, Any]:
    """How the champion was made: its reference dataset, estimator, parameters, split and compile target."""
    mv = registry.get_model_version(session, model_id, version)
    run = registry.get_run(session, mv.run_id) if mv.run_id else None
    if run is None or "dataset" not in mv.lineage:
        raise InvalidRequestError(f"{model_id} v{version} has no training run in the registry: cannot retrain it")
    params = dict(run.parameters)
    # a `train` run spreads the estimator's parameters among its own; a `retrain` run keeps them apart
    known = {"estimator", "test_size", "seed", "target", "quantize", "model_id"}
    estimator_params = params.get("estimator_params", {k: v for k, v in params.items() if k not in known})
    return {
        "dataset": mv.lineage["dataset"],
        "estimator": params.get("estimator", mv.lineage.get("estimator", "logreg")),
        "params": dict(estimator_params),
        "test_size": float(params.get("test_size", 0.3)),
        "seed": int(params.get("seed", 0)),
        "target": str(params.get("target", "onnx")),
        "quantize": str(params.get("quantize", "int8")),
    }


def _as_classes(labels: Sequence[str], classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Field labels (text) as the reference's class values, and which rows had a known class."""
    by_text = {str(c): c for c in classes}
    keep = np.array([label in by_text for label in labels], dtype=bool)
    return np.array([by_text[label] for label in labels if label in by_text], dtype=classes.dtype), keep


def _blobs(store: ArtifactStore, manifest: Any) -> dict[str, bytes]:
    return {a.name: store.get(a.sha256) for a in manifest.artifacts}


def retrain(
    engine: Engine,
    store: ArtifactStore,
    signer: Signer,
    model_id: str,
    *,
    trigger: Trigger,
    actor: str,
    policy: RetrainPolicy | None = None,
    selection: field_data.Selection | None = None,
    field_dataset: str | None = None,
    deploy: Callable[[DeploymentCreate, RolloutPolicy], Deployment] | None = None,
    targets: Sequence[str] = (),
    progress: Callable[[str], None] = lambda _step: None,
) -> RetrainResult:
    """One champion/challenger run. `field_dataset` names a snapshot to use (else one is taken now with
    `selection`); `deploy` starts the canary rollout of a winner on `targets` when the policy says canary."""
    from model_compiler import compile_estimator

    policy = policy or RetrainPolicy()
    step = _Timer(progress)
    step("snapshot")
    with session_scope(engine) as session:
        champion_version = current_champion(session, model_id)
        recipe = recipe_of(session, model_id, champion_version)
        champion_mv = registry.get_model_version(session, model_id, champion_version)
        champion_manifest = registry.manifest_of(champion_mv)
        if field_dataset is None:
            snap = field_data.snapshot(session, store, selection or field_data.Selection(model_id))
            field_dataset = snap.content_hash
        field_rows = field_data.load(session, store, field_dataset)
        if field_rows.model_id != model_id:
            raise InvalidRequestError(f"dataset {field_dataset[:12]} holds {field_rows.model_id} data, not {model_id}")
        train_rows, eval_rows = field_data.split(field_rows.rows, policy.eval_share)
        if not train_rows or not eval_rows:
            raise InvalidRequestError(f"{len(field_rows.rows)} labelled field row(s): too few to hold some out "
                                      f"for the judgement and train on the rest")  # fmt: skip
        parts = {}
        for role, rows in (("field_train", train_rows), ("field_eval", eval_rows)):
            record = field_data.store_rows(session, store, model_id, rows, name=f"{model_id}-{role}", origin={
                "split_of": field_dataset, "part": role, "eval_share": policy.eval_share,
            })  # fmt: skip
            parts[role] = record.content_hash
    champion_blobs = _blobs(store, champion_manifest)
    reference = load_dataset(recipe["dataset"], test_size=recipe["test_size"], seed=recipe["seed"])
    datasets = {"reference": reference.content_hash, "field": field_dataset, **parts}
    parameters = {
        "model_id": model_id, "estimator": recipe["estimator"], "estimator_params": recipe["params"],
        "test_size": recipe["test_size"], "seed": recipe["seed"],
        "target": recipe["target"], "quantize": recipe["quantize"], "trigger": trigger.kind.value,
        "champion": champion_version, "field_datasets": {k: v for k, v in datasets.items() if k != "reference"},
        "margin": policy.margin.margin, "max_reference_loss": policy.margin.max_reference_loss,
    }
    with session_scope(engine) as session:
        registry.register_dataset(session, DatasetCreate(
            content_hash=reference.content_hash, name=reference.name, n_features=reference.X_train.shape[1],
            n_rows=len(reference.X_train) + len(reference.X_test),
        ))  # fmt: skip
        run = registry.start_run(session, PipelineRunCreate(
            pipeline="retrain", code_version=code_version(), parameters=parameters, dataset_hash=reference.content_hash,
        ))  # fmt: skip
        run_id = run.id
        session.add_all(RunInput(run_id=run_id, dataset_hash=h, role=role) for role, h in datasets.items())
    try:
        result = _train_judge_register(
            engine, store, signer, run_id, model_id, trigger, actor, policy, recipe, reference,
            (field_rows, train_rows, eval_rows), champion_version, champion_manifest, champion_blobs, datasets, step,
            compile_estimator,
        )  # fmt: skip
    except Exception as exc:
        with session_scope(engine) as session:
            registry.finish_run(session, run_id, status=RunStatus.FAILED, step_timings_s=step.done(), error=str(exc))
        raise
    if result.challenger is not None and policy.on_win == "canary" and deploy is not None and targets:
        step("canary rollout")
        deployment = deploy(
            DeploymentCreate(model_id=model_id, version=result.challenger, device_ids=list(targets)),
            rollout_policy(policy),
        )
        result.deployment_id = deployment.id
    result.step_timings_s = step.done()
    with session_scope(engine) as session:
        registry.record_step(session, run_id, "canary rollout", result.step_timings_s.get("canary rollout", 0.0))
    return result


def rollout_policy(policy: RetrainPolicy) -> RolloutPolicy:
    """A canary like any release's, except two gates: a retrained model is meant to predict differently
    from the champion on drifted inputs, so prediction shift and shadow agreement with the champion are
    not held against it (its quality was judged on labelled data instead). Installs, errors and latency
    are gated as usual."""
    gates = GateRequest(**{"max_prediction_psi": 10.0, "min_shadow_agreement": 0.0,
                           "min_inferences": policy.min_inferences, **policy.gate_overrides})  # fmt: skip
    return RolloutPolicy(strategy="canary", canary=policy.canary, dwell_s=policy.dwell_s, gates=gates)


def _train_judge_register(
    engine: Engine, store: ArtifactStore, signer: Signer, run_id: str, model_id: str, trigger: Trigger, actor: str,
    policy: RetrainPolicy, recipe: dict[str, Any], reference: DatasetSplit,
    field_parts: tuple[field_data.FieldDataset, list[field_data.FieldRow], list[field_data.FieldRow]],
    champion_version: str, champion_manifest: Any, champion_blobs: dict[str, bytes], datasets: dict[str, str],
    step: _Timer, compile_estimator: Callable[..., Any],
) -> RetrainResult:  # fmt: skip
    _, train_rows, eval_rows = field_parts
    classes = np.unique(reference.y_train)
    step("train")
    field_X = np.asarray([r.input for r in train_rows], dtype=np.float32).reshape(-1, reference.X_train.shape[1])
    field_y, known = _as_classes([r.label for r in train_rows], classes)
    X = np.vstack([reference.X_train, field_X[known]])
    y = np.concatenate([reference.y_train, field_y])
    estimator = build_estimator(recipe["estimator"], recipe["params"], recipe["seed"]).fit(X, y)
    step("compile")
    compiled = compile_estimator(estimator, reference.X_test, reference.y_test, target=recipe["target"],
                                 quantize=recipe["quantize"], reference_X=X)  # fmt: skip
    challenger_blobs = {built.artifact.name: built.data for built in compiled.artifacts}
    step("evaluate")
    eval_X = np.asarray([r.input for r in eval_rows], dtype=np.float32).reshape(-1, reference.X_train.shape[1])
    eval_truth = [r.label for r in eval_rows]
    ref_truth = [str(v) for v in reference.y_test]
    field_cmp = rule.compare("field", eval_truth, predict_labels(champion_manifest, champion_blobs, eval_X),
                             predict_labels(compiled.fragment, challenger_blobs, eval_X))  # fmt: skip
    ref_cmp = rule.compare("reference", ref_truth, predict_labels(champion_manifest, champion_blobs, reference.X_test),
                           predict_labels(compiled.fragment, challenger_blobs, reference.X_test))  # fmt: skip
    verdict = rule.judge(field_cmp, ref_cmp, policy.margin)
    metrics = {
        "field_rows_train": float(len(train_rows)), "field_rows_eval": float(field_cmp.n),
        "champion_field_accuracy": field_cmp.champion_accuracy or 0.0,
        "challenger_field_accuracy": field_cmp.challenger_accuracy or 0.0,
        "champion_reference_accuracy": ref_cmp.champion_accuracy or 0.0,
        "challenger_reference_accuracy": ref_cmp.challenger_accuracy or 0.0,
        "field_gain": field_cmp.gain or 0.0, "reference_gain": ref_cmp.gain or 0.0,
        "won": 1.0 if verdict.outcome == rule.Outcome.WIN else 0.0,
    }  # fmt: skip
    challenger_version = None
    if verdict.outcome == rule.Outcome.WIN:
        step("sign and register")
        manifest = compiled.fragment
        manifest.model_id = model_id
        manifest.lineage.update({
            "dataset": recipe["dataset"], "dataset_hash": reference.content_hash, "run_id": run_id,
            "code_version": code_version(), "estimator": recipe["estimator"], "trigger": trigger.kind.value,
            "champion": champion_version, "field_dataset_hash": datasets["field"],
            "field_train_hash": datasets["field_train"], "field_eval_hash": datasets["field_eval"],
        })  # fmt: skip
        manifest.metrics["accuracy"] = ref_cmp.challenger_accuracy or 0.0
        manifest.metrics["field_accuracy"] = field_cmp.challenger_accuracy or 0.0
        with session_scope(engine) as session:
            mv = registry.register_model_version(session, manifest, challenger_blobs, store=store, signer=signer,
                                                 run_id=run_id, valid_days=policy.manifest_valid_days)  # fmt: skip
            challenger_version = mv.version
            aliases.move(session, model_id, aliases.CHALLENGER, mv.version, actor=actor,
                         reason=f"{trigger.reason}; " + "; ".join(verdict.reasons))  # fmt: skip
    with session_scope(engine) as session:
        registry.finish_run(session, run_id, metrics=metrics, step_timings_s=step.timings)
    return RetrainResult(
        run_id=run_id, model_id=model_id, trigger=trigger, champion=champion_version, challenger=challenger_version,
        verdict=verdict, field_eval=field_cmp, reference=ref_cmp, datasets=datasets, step_timings_s=step.timings,
        dropped_labels=int((~known).sum()),
    )  # fmt: skip


def promote(session: Session, model_id: str, version: str, *, actor: str, reason: str) -> list[str]:
    """Make `version` the champion and production (once its rollout has done its job); returns the
    aliases that moved."""
    if not reason.strip():
        raise InvalidRequestError("a promotion says why (reason)")
    moved = []
    for alias in (aliases.CHAMPION, aliases.PRODUCTION):
        if aliases.move(session, model_id, alias, version, actor=actor, reason=reason) is not None:
            moved.append(alias)
    return moved
