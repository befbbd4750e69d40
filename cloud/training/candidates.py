"""The retraining pipeline's steps, each on its own: train -> compile -> evaluate -> register.

An external orchestrator (cron, Airflow, Argo) runs each as a separate process (`edgefleet pipeline
train|compile|evaluate|register`), so what one step makes the next finds by name alone:

train      snapshot the labelled field samples (or take a named dataset version), split them by row id into a
           train part and a held-out part, fit a challenger with the champion's recipe on its reference data
           plus the field train part, and store it as a *candidate*: a JSON document in the artifact store
           naming the estimator's bytes by their sha256. The candidate's id is the document's sha256; the
           run that made it records its inputs (`RunInput`). The run's id is a hash of those inputs, so the
           same inputs give back the same candidate instead of a second one.
compile    the candidate as the devices will run it; the artifacts go to the store, their digests to the
           candidate's row.
evaluate   champion and candidate, both as compiled, on the held-out field rows and the held-out reference
           rows, judged by `champion.judge` (compiles first if `compile` has not run).
register   a candidate that won: sign it, register it with its lineage, point `challenger` at it.

Every step checks the bytes it reads against their digests, so a candidate changed or lost in the store is
refused, and each records its timing in the run; a step run again returns what it made the first time.
`retrain.retrain` is these four in a row.
"""

from __future__ import annotations

import hashlib
import json
import pickle  # noqa: S403  (only bytes this cloud wrote and whose sha256 its database holds are unpickled)
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from cloud import registry
from cloud.db import RunStatus, insert_ignore, session_scope
from cloud.db.tables import Candidate, DatasetCreate, PipelineRunCreate, RunInput
from cloud.errors import ArtifactCorruptError, InvalidRequestError, NotFoundError
from cloud.registry import aliases, field_data
from cloud.registry.artifacts import ArtifactStore, sha256_hex
from cloud.training import champion as rule
from cloud.training.evaluation import predict_labels
from cloud.training.pipeline import DatasetSplit, build_estimator, code_version, load_dataset
from cloud.training.triggers import Trigger
from protocols.signing import Signer

CANDIDATE_FORMAT = "edgefleet-candidate/1"
_HEX = re.compile(r"[0-9a-f]{12,64}")
Progress = Callable[[str], None]


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
    known = {"estimator", "test_size", "seed", "target", "quantize", "model_id", "profile_from", "pool_size"}
    estimator_params = params.get("estimator_params", {k: v for k, v in params.items() if k not in known})
    return {
        "dataset": mv.lineage["dataset"],
        "estimator": params.get("estimator", mv.lineage.get("estimator", "logreg")),
        "params": dict(estimator_params),
        "test_size": float(params.get("test_size", 0.3)),
        "pool_size": float(params.get("pool_size", 0.0)),
        "profile_from": str(params.get("profile_from", "train")),
        "seed": int(params.get("seed", 0)),
        "target": str(params.get("target", "onnx")),
        "quantize": str(params.get("quantize", "int8")),
    }


def reference_split(recipe: dict[str, Any]) -> DatasetSplit:
    """The champion's reference data, split as it was (a candidate of before the pool has no pool_size)."""
    return load_dataset(recipe["dataset"], test_size=recipe["test_size"], seed=recipe["seed"],
                        pool_size=recipe.get("pool_size", 0.0))  # fmt: skip


def _as_classes(labels: Sequence[str], classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Field labels (text) as the reference's class values, and which rows had a known class."""
    by_text = {str(c): c for c in classes}
    keep = np.array([label in by_text for label in labels], dtype=bool)
    return np.array([by_text[label] for label in labels if label in by_text], dtype=classes.dtype), keep


@dataclass(frozen=True)
class TrainedCandidate:
    id: str
    model_id: str
    run_id: str
    champion: str
    datasets: dict[str, str]  # role -> content hash
    dropped_labels: int
    new: bool  # False: these inputs had already made it


@dataclass(frozen=True)
class Judgement:
    candidate: str
    champion: str
    verdict: rule.Verdict
    field_eval: rule.Comparison
    reference: rule.Comparison
    policy: rule.MarginPolicy  # what the verdict was judged by
    recorded: bool = True  # the policy the train step recorded (the one `register` judges by), not one given


def _verified(store: ArtifactStore, sha256: str, what: str) -> bytes:
    data = store.get(sha256)
    if sha256_hex(data) != sha256:  # not every store checks on read
        raise ArtifactCorruptError(f"{what} {sha256} in the artifact store no longer matches its digest")
    return data


@contextmanager
def _step(engine: Engine, run_id: str, name: str, progress: Progress) -> Iterator[None]:
    """Time a step into its run; a step that fails marks the run failed, with why."""
    progress(name)
    started = time.perf_counter()
    try:
        yield
    except Exception as exc:
        with session_scope(engine) as session:
            registry.finish_run(session, run_id, status=RunStatus.FAILED, error=str(exc),
                                step_timings_s={name: round(time.perf_counter() - started, 4)})  # fmt: skip
        raise
    with session_scope(engine) as session:
        run = registry.record_step(session, run_id, name, time.perf_counter() - started)
        if run.status == RunStatus.FAILED:  # an earlier try of this step failed; this one did not
            registry.finish_run(session, run_id)


def get_candidate(session: Session, candidate_id: str) -> Candidate:
    """A candidate by its id or an unambiguous prefix of at least 12 hex digits."""
    if not _HEX.fullmatch(candidate_id):
        raise InvalidRequestError(f"not a candidate id (12 to 64 hex digits): {candidate_id!r}")
    found = session.get(Candidate, candidate_id)
    if found is None and len(candidate_id) < 64:
        matches = list(session.exec(select(Candidate).where(col(Candidate.id).startswith(candidate_id)).limit(2)))
        found = matches[0] if len(matches) == 1 else None
    if found is None:
        raise NotFoundError(f"no candidate {candidate_id} (`edgefleet pipeline train` makes them)")
    return found


def _document(store: ArtifactStore, candidate: Candidate) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(_verified(store, candidate.id, "candidate"))
    if document.get("format") != CANDIDATE_FORMAT or document.get("run_id") != candidate.run_id:
        raise ArtifactCorruptError(f"candidate {candidate.id} is not the document its run recorded")
    return document


def _parameters(model_id: str, champion: str, recipe: dict[str, Any], datasets: dict[str, str], trigger: Trigger,
                margin: rule.MarginPolicy) -> dict[str, Any]:  # fmt: skip
    return {
        "model_id": model_id, "estimator": recipe["estimator"], "estimator_params": recipe["params"],
        "test_size": recipe["test_size"], "seed": recipe["seed"],
        "target": recipe["target"], "quantize": recipe["quantize"], "trigger": trigger.kind.value,
        "champion": champion, "field_datasets": {k: v for k, v in datasets.items() if k != "reference"},
        "margin": margin.margin, "max_reference_loss": margin.max_reference_loss,
        "min_field_rows": margin.min_field_rows, "trigger_reason": trigger.reason,
    }  # fmt: skip


def train(
    engine: Engine, store: ArtifactStore, model_id: str, *, trigger: Trigger,
    margin: rule.MarginPolicy | None = None, eval_share: float = 0.5, selection: field_data.Selection | None = None,
    field_dataset: str | None = None, progress: Progress = lambda _step: None,
) -> TrainedCandidate:  # fmt: skip
    """Fit a challenger on the champion's reference data plus the field train part; store it as a candidate.
    The margin policy is recorded with the run, for `evaluate` in another process to judge by."""
    margin = margin or rule.MarginPolicy()
    progress("snapshot")
    started = time.perf_counter()
    with session_scope(engine) as session:
        champion = current_champion(session, model_id)
        recipe = recipe_of(session, model_id, champion)
        if field_dataset is None:
            snap = field_data.snapshot(session, store, selection or field_data.Selection(model_id))
            field_dataset = snap.content_hash
        field_rows = field_data.load(session, store, field_dataset)
        if field_rows.model_id != model_id:
            raise InvalidRequestError(f"dataset {field_dataset[:12]} holds {field_rows.model_id} data, not {model_id}")
        train_rows, eval_rows = field_data.split(field_rows.rows, eval_share)
        if not train_rows or not eval_rows:
            raise InvalidRequestError(f"{len(field_rows.rows)} labelled field row(s): too few to hold some out "
                                      f"for the judgement and train on the rest")  # fmt: skip
        parts = {}
        for role, rows in (("field_train", train_rows), ("field_eval", eval_rows)):
            record = field_data.store_rows(session, store, model_id, rows, name=f"{model_id}-{role}", origin={
                "split_of": field_dataset, "part": role, "eval_share": eval_share,
            })  # fmt: skip
            parts[role] = record.content_hash
    reference = reference_split(recipe)
    datasets = {"reference": reference.content_hash, "field": field_dataset, **parts}
    version_of_code = code_version()
    # the run is named by what determines the candidate: the same inputs find the run they made before
    inputs = {"model_id": model_id, "champion": champion, "recipe": recipe, "datasets": datasets,
              "eval_share": eval_share, "code_version": version_of_code, "margin": asdict(margin)}  # fmt: skip
    run_id = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]
    with session_scope(engine) as session:
        existing = session.exec(select(Candidate).where(Candidate.run_id == run_id)).first()
        if existing is not None:
            _document(store, existing)
            run = registry.get_run(session, run_id)
            return TrainedCandidate(existing.id, model_id, run_id, champion, datasets,
                                    int(run.metrics.get("dropped_labels", 0)), new=False)  # fmt: skip
        registry.register_dataset(session, DatasetCreate(
            content_hash=reference.content_hash, name=reference.name, n_features=reference.X_train.shape[1],
            n_rows=len(reference.X_train) + len(reference.X_test) + len(reference.X_pool),
        ))  # fmt: skip
        run = registry.start_run(session, PipelineRunCreate(
            pipeline="retrain", code_version=version_of_code, dataset_hash=reference.content_hash,
            parameters=_parameters(model_id, champion, recipe, datasets, trigger, margin),
        ), run_id=run_id)  # fmt: skip
        run.status, run.error = RunStatus.RUNNING, None  # a failed run of the same inputs, tried again
        session.add(run)
        registry.record_step(session, run_id, "snapshot", time.perf_counter() - started)
        insert_ignore(session, RunInput, [{"run_id": run_id, "dataset_hash": h, "role": role}
                                          for role, h in datasets.items()], ["run_id", "dataset_hash", "role"])
    with _step(engine, run_id, "train", progress):
        field_X = np.asarray([r.input for r in train_rows], dtype=np.float32).reshape(-1, reference.X_train.shape[1])
        classes = np.unique(reference.y_train)
        field_y, known = _as_classes([r.label for r in train_rows], classes)
        # a field row that is one of the reference's held-out rows stays out of the fit: the reference side
        # of the judgement would otherwise score the challenger on rows it learnt
        held_out = {row.tobytes() for row in reference.X_test}
        fresh = np.array([row.tobytes() not in held_out for row in field_X[known]], dtype=bool)
        X = np.vstack([reference.X_train, field_X[known][fresh]])
        y = np.concatenate([reference.y_train, field_y[fresh]])
        estimator = build_estimator(recipe["estimator"], recipe["params"], recipe["seed"]).fit(X, y)
        document = {
            "format": CANDIDATE_FORMAT, "model_id": model_id, "run_id": run_id, "champion": champion,
            "recipe": recipe, "datasets": datasets, "estimator_format": "pickle",
            "estimator_sha256": store.put(pickle.dumps(estimator, protocol=5)),
            "fitted_rows": {"reference": len(reference.X_train), "field": int(fresh.sum()),
                            "field_held_out_left_out": int((~fresh).sum())},
        }  # fmt: skip
        candidate_id = store.put(json.dumps(document, sort_keys=True).encode())
        dropped = int((~known).sum())
        with session_scope(engine) as session:
            # the same inputs trained in two processes at once: both get here, the first one's candidate stands
            first = session.exec(select(Candidate).where(Candidate.run_id == run_id)).first()
            new = first is None and insert_ignore(session, Candidate, [Candidate(
                id=candidate_id, model_id=model_id, run_id=run_id, champion=champion,
            ).model_dump()], ["id"]) == 1  # fmt: skip
            candidate_id = first.id if first is not None else candidate_id
            registry.finish_run(session, run_id, metrics={"field_rows_train": len(train_rows),
                                                          "dropped_labels": dropped,
                                                          "held_out_rows_left_out": int((~fresh).sum())})  # fmt: skip
    return TrainedCandidate(candidate_id, model_id, run_id, champion, datasets, dropped, new=new)


def _estimator_and_reference(store: ArtifactStore, document: dict[str, Any]) -> tuple[Any, DatasetSplit]:
    recipe = document["recipe"]
    reference = reference_split(recipe)
    if reference.content_hash != document["datasets"]["reference"]:
        raise InvalidRequestError(f"reference dataset {recipe['dataset']} is not the one the candidate was trained on")
    estimator = pickle.loads(_verified(store, document["estimator_sha256"], "estimator"))  # noqa: S301 (digest checked)
    return estimator, reference


def compile_candidate(engine: Engine, store: ArtifactStore, candidate_id: str,
                      progress: Progress = lambda _step: None) -> dict[str, str]:  # fmt: skip
    """The candidate as the devices will run it: artifact name -> sha256 ("manifest": the fragment). Empty
    when the compiler's accuracy gate refused every artifact of the recipe (`refused_at_compile` says why):
    the candidate is then judged lost, as a challenger beaten on the field would be, and the run succeeds
    with that verdict rather than failing."""
    from model_compiler import GateRefusedError, compile_estimator

    with session_scope(engine) as session:
        candidate = get_candidate(session, candidate_id)
        document = _document(store, candidate)
        if candidate.artifacts:
            for name, digest in candidate.artifacts.items():
                _verified(store, digest, name)
            return dict(candidate.artifacts)
        if refused_at_compile(candidate):
            return {}
        candidate_id, run_id = candidate.id, candidate.run_id
    with _step(engine, run_id, "compile", progress):
        estimator, reference = _estimator_and_reference(store, document)
        recipe = document["recipe"]
        profiled = reference.profile_rows(recipe.get("profile_from", "train"))  # the champion's drift baseline
        try:
            compiled = compile_estimator(estimator, reference.X_test, reference.y_test, target=recipe["target"],
                                         quantize=recipe["quantize"], reference_X=profiled,
                                         calibration_X=reference.X_train)  # fmt: skip
        except GateRefusedError as refused:
            # a recipe of `int8` alone can meet a challenger whose INT8 copy loses accuracy: that challenger
            # does not ship, and the loop goes on with the champion; the gate's table is kept to say why
            _judge_refused_at_compile(engine, candidate_id, run_id, refused)
            return {}
        artifacts = {built.artifact.name: store.put(built.data) for built in compiled.artifacts}
        artifacts["manifest"] = store.put(compiled.fragment.SerializeToString())
        with session_scope(engine) as session:
            row = get_candidate(session, candidate_id)
            row.artifacts = artifacts
            session.add(row)
    return artifacts


def refused_at_compile(candidate: Candidate) -> str | None:
    """The compiler's gate table when no artifact of the candidate's recipe kept the accuracy, else None."""
    refused = candidate.judgement.get("refused_at_compile") if candidate.judgement else None
    return str(refused) if refused is not None else None


def _judge_refused_at_compile(engine: Engine, candidate_id: str, run_id: str, refused: Exception) -> None:
    headline, _, table = str(refused).partition("\n")
    nothing = {"n": 0, "champion_correct": 0, "challenger_correct": 0, "challenger_only": 0, "champion_only": 0}
    with session_scope(engine) as session:
        row = get_candidate(session, candidate_id)
        row.judgement = {"outcome": rule.Outcome.LOSE.value,
                         "reasons": [f"refused at compile: {headline}; the champion stays"],
                         "field": {"name": "field", **nothing}, "reference": {"name": "reference", **nothing},
                         "refused_at_compile": table or headline}  # fmt: skip
        session.add(row)
        registry.finish_run(session, run_id, metrics={"won": 0.0, "refused_at_compile": 1.0})


def _compiled(store: ArtifactStore, artifacts: dict[str, str]) -> tuple[Any, dict[str, bytes]]:
    from protocols.v1 import messages_pb2

    fragment = messages_pb2.Manifest.FromString(_verified(store, artifacts["manifest"], "manifest"))
    return fragment, {a.name: _verified(store, artifacts[a.name], a.name) for a in fragment.artifacts}


def _judgement(candidate: Candidate, policy: rule.MarginPolicy) -> Judgement:
    stored = candidate.judgement
    return Judgement(candidate.id, candidate.champion,
                     rule.Verdict(rule.Outcome(stored["outcome"]), list(stored["reasons"])),
                     rule.Comparison(**stored["field"]), rule.Comparison(**stored["reference"]), policy)  # fmt: skip


def _recorded_policy(params: dict[str, Any]) -> rule.MarginPolicy:
    return rule.MarginPolicy(margin=float(params["margin"]), max_reference_loss=float(params["max_reference_loss"]),
                             min_field_rows=int(params.get("min_field_rows", 30)))  # fmt: skip


def evaluate(engine: Engine, store: ArtifactStore, candidate_id: str, progress: Progress = lambda _step: None,
             *, policy: dict[str, Any] | None = None) -> Judgement:  # fmt: skip
    """Champion and candidate, as the devices run them, on the held-out field and reference rows; judged by
    the margin policy the run recorded, or with `policy` (margin, max_reference_loss, min_field_rows: any of
    them) by that policy instead: the same comparisons, judged again; the recorded verdict, the one
    `register` acts on, stays as it was."""
    judged = _evaluate(engine, store, candidate_id, progress)
    if not policy:
        return judged
    given = replace(judged.policy, **policy)
    verdict = rule.judge(judged.field_eval, judged.reference, given)
    return replace(judged, verdict=verdict, policy=given, recorded=given == judged.policy)


def _evaluate(engine: Engine, store: ArtifactStore, candidate_id: str, progress: Progress) -> Judgement:
    artifacts = compile_candidate(engine, store, candidate_id, progress)
    with session_scope(engine) as session:
        candidate = get_candidate(session, candidate_id)
        margin = _recorded_policy(registry.get_run(session, candidate.run_id).parameters)
        if candidate.judgement:
            return _judgement(candidate, margin)
        document = _document(store, candidate)
        champion_manifest = registry.manifest_of(registry.get_model_version(session, candidate.model_id,
                                                                            candidate.champion))  # fmt: skip
        eval_rows = field_data.load(session, store, document["datasets"]["field_eval"]).rows
        candidate_id, run_id = candidate.id, candidate.run_id
    with _step(engine, run_id, "evaluate", progress):
        champion_blobs = {a.name: _verified(store, a.sha256, a.name) for a in champion_manifest.artifacts}
        fragment, blobs = _compiled(store, artifacts)
        recipe = document["recipe"]
        reference = reference_split(recipe)
        eval_X = np.asarray([r.input for r in eval_rows], dtype=np.float32).reshape(-1, reference.X_test.shape[1])
        field_cmp = rule.compare("field", [r.label for r in eval_rows],
                                 predict_labels(champion_manifest, champion_blobs, eval_X),
                                 predict_labels(fragment, blobs, eval_X))  # fmt: skip
        ref_cmp = rule.compare("reference", [str(v) for v in reference.y_test],
                               predict_labels(champion_manifest, champion_blobs, reference.X_test),
                               predict_labels(fragment, blobs, reference.X_test))  # fmt: skip
        verdict = rule.judge(field_cmp, ref_cmp, margin)
        metrics = {
            "field_rows_eval": float(field_cmp.n),
            "champion_field_accuracy": field_cmp.champion_accuracy or 0.0,
            "challenger_field_accuracy": field_cmp.challenger_accuracy or 0.0,
            "champion_reference_accuracy": ref_cmp.champion_accuracy or 0.0,
            "challenger_reference_accuracy": ref_cmp.challenger_accuracy or 0.0,
            "field_gain": field_cmp.gain or 0.0, "reference_gain": ref_cmp.gain or 0.0,
            "won": 1.0 if verdict.outcome == rule.Outcome.WIN else 0.0,
        }  # fmt: skip
        with session_scope(engine) as session:
            row = get_candidate(session, candidate_id)
            row.judgement = {"outcome": verdict.outcome.value, "reasons": verdict.reasons,
                             "field": asdict(field_cmp), "reference": asdict(ref_cmp)}  # fmt: skip
            session.add(row)
            registry.finish_run(session, run_id, metrics=metrics)
            return _judgement(row, margin)


def register(engine: Engine, store: ArtifactStore, signer: Signer, candidate_id: str, *, actor: str,
             manifest_valid_days: float = 90.0, progress: Progress = lambda _step: None) -> str | None:  # fmt: skip
    """Sign and register a candidate that won, with its lineage, and point `challenger` at it; returns its
    version, or None when it did not win (nothing to register)."""
    judged = evaluate(engine, store, candidate_id, progress)
    if judged.verdict.outcome != rule.Outcome.WIN:
        return None
    with session_scope(engine) as session:
        candidate = get_candidate(session, candidate_id)
        if candidate.version is not None:
            return candidate.version
        document = _document(store, candidate)
        run = registry.get_run(session, candidate.run_id)
        trigger_kind, trigger_reason = run.parameters["trigger"], run.parameters.get("trigger_reason", "")
        trained_by = run.code_version
        candidate_id, run_id, artifacts = candidate.id, candidate.run_id, dict(candidate.artifacts)
    with _step(engine, run_id, "sign and register", progress):
        manifest, blobs = _compiled(store, artifacts)
        datasets, recipe = document["datasets"], document["recipe"]
        manifest.model_id = document["model_id"]
        manifest.lineage.update({
            "dataset": recipe["dataset"], "dataset_hash": datasets["reference"], "run_id": run_id,
            "code_version": trained_by, "estimator": recipe["estimator"], "trigger": trigger_kind,
            "champion": document["champion"], "field_dataset_hash": datasets["field"],
            "field_train_hash": datasets["field_train"], "field_eval_hash": datasets["field_eval"],
            "candidate": candidate_id,
        })  # fmt: skip
        manifest.metrics["accuracy"] = judged.reference.challenger_accuracy or 0.0
        manifest.metrics["field_accuracy"] = judged.field_eval.challenger_accuracy or 0.0
        with session_scope(engine) as session:
            mv = registry.register_model_version(session, manifest, blobs, store=store, signer=signer, run_id=run_id,
                                                 valid_days=manifest_valid_days)  # fmt: skip
            aliases.move(session, mv.model_id, aliases.CHALLENGER, mv.version, actor=actor,
                         reason=f"{trigger_reason}; " + "; ".join(judged.verdict.reasons))  # fmt: skip
            row = get_candidate(session, candidate_id)
            row.version = mv.version
            session.add(row)
            return mv.version
