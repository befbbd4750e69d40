"""`compile_estimator`: a fitted estimator in, gated artifacts and a manifest fragment out.

Steps: read the estimator into a DenseModel, Forest or Converted (families.py); build every candidate the options
allow (candidates.py); load each in the very runtime adapter devices use (edge_agent.serving.runtime) and judge
it against the source estimator on the held-out data (gate.py); keep, per target, the fp32 artifact
(`none`), the smallest passing INT8 one (`int8`), the FP16-weight one (`fp16`) or the smallest passing
one of all these (`auto`, which writes what it kept and why into the manifest's lineage); then embed
self-test vectors that every kept artifact passes through edge_agent.serving.selftest, and the reference profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.serving.columns import STRING
from edge_agent.serving.runtime import MULTILABEL_SEPARATOR, LoadedModel, Prediction, load_model
from edge_agent.serving.selftest import run_self_test
from model_compiler import gate as gates
from model_compiler.candidates import (
    QUANTIZATIONS_AUTO,
    Candidate,
    build,
    label_dtype,
    plan,
    requirement,
    tflite_refusal,
)
from model_compiler.columns import (
    check_named,
    column_specs,
    decode_frame,
    encode_frame,
    frame_dtypes,
    is_frame,
    snap_codes,
)
from model_compiler.errors import BadInputError, CompileError, GateRefusedError
from model_compiler.families import Analysis, analyse, label_str
from model_compiler.manifest import (
    CHOICE_KEY,
    FRAGMENT_FILE,
    NOTES_KEY,
    artifact_record,
    estimator_digest,
    fragment_json,
    io_schema,
)
from model_compiler.profile import confidence_profile, label_rates, reference_profile
from model_compiler.report import CandidateReport, CompileReport
from model_compiler.segments import compares_scaled_categories
from model_compiler.types import QUANTIZE_CHOICES, SELF_TEST_SOURCES, TARGET_CHOICES, TARGETS
from model_compiler.vectors import build_self_test, pick_classifier_rows, pick_regressor_rows, synthetic_inputs
from protocols.v1 import messages_pb2 as pb

# synthetic rows drawn to pick self-test vectors from (only rows every artifact agrees on are kept)
SYNTHETIC_POOL_ROWS = 512


@dataclass
class BuiltArtifact:
    artifact: pb.Artifact
    data: bytes


@dataclass
class CompileResult:
    artifacts: list[BuiltArtifact]
    fragment: pb.Manifest
    report: CompileReport

    def write(self, out_dir: Path) -> list[Path]:
        """Write the artifacts and manifest.fragment.json into out_dir; returns the paths written."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for built in self.artifacts:
            path = out_dir / built.artifact.name
            path.write_bytes(built.data)
            paths.append(path)
        path = out_dir / FRAGMENT_FILE
        path.write_text(fragment_json(self.fragment), encoding="utf-8")
        paths.append(path)
        return paths


def _check_data(x: Any, y: Any, n_features: int, what: str) -> np.ndarray:
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{what}: X is not numeric: {exc}") from None
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != n_features:
        raise BadInputError(f"{what}: X must have shape (rows>=1, {n_features}), got {x.shape}")
    if y is not None and len(y) != x.shape[0]:
        raise BadInputError(f"{what}: X has {x.shape[0]} rows but y has {len(y)}")
    if np.isinf(x).any():
        raise BadInputError(f"{what}: X holds infinite values (or values too large for float32)")
    return x


def _typed_data(x: Any, y: Any, n_features: int, specs: list[pb.ColumnSpec], what: str) -> np.ndarray:
    """Held-out or reference data as the float batch a device sends: a DataFrame through its named
    columns (strings become category codes), anything else as a numeric matrix."""
    if is_frame(x):
        if y is not None and len(y) != len(x):
            raise BadInputError(f"{what}: X has {len(x)} rows but y has {len(y)}")
        if x.shape[1] != n_features:
            raise BadInputError(f"{what}: X must have {n_features} columns, got {x.shape[1]}")
        return encode_frame(x, specs, what)
    return _check_data(x, y, n_features, what)


def label_sets(indicator: Any, labels: list[str]) -> list[str]:
    """Multilabel rows (a 0/1 indicator matrix) as the agent labels them: the labels that are on, joined."""
    on = np.asarray(indicator).reshape(len(indicator), len(labels)) > 0.5
    return [MULTILABEL_SEPARATOR.join(labels[j] for j in np.flatnonzero(row)) for row in on]


def _source_outputs(
    estimator: Any, x: Any, classifier: bool, float64: bool = False, multilabel: list[str] | None = None
) -> list[str] | np.ndarray:
    """The estimator's predictions on what a device sends (float32 values). With `float64`, scikit-learn
    computes on them in float64: on float32 input it scales in float32 and then misses the float64
    categories a OneHotEncoder after scaling was fitted on (the artifact compares within a tolerance)."""
    if float64 and not is_frame(x):
        x = np.asarray(x, dtype=np.float64)
    try:
        predicted = estimator.predict(x)
    except Exception as exc:  # sklearn raises many types for data it cannot take (NaN without imputer, ...)
        raise BadInputError(f"the estimator cannot predict on this data: {exc}") from None
    if multilabel is not None:
        return label_sets(predicted, multilabel)
    return [label_str(v) for v in predicted] if classifier else np.asarray(predicted, dtype=np.float64)


def compile_estimator(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    target: str = "onnx",
    quantize: str = "auto",  # noqa: N803 (sklearn's X)
    reference_X: Any = None,
    gate: gates.Gate | None = None,
    n_self_test: int = 16,  # noqa: N803
    self_test_from: str = "synthetic",
    calibration_X: Any = None,  # noqa: N803
) -> CompileResult:
    """Compile a fitted estimator or Pipeline; X, y are held-out data for the gate. INT8 activation ranges are
    calibrated on `calibration_X` (default: `reference_X`, the rows the drift profile describes, else X).

    Self-test vectors are drawn from the reference profile (`self_test_from="synthetic"`, the default:
    no real row leaves in the manifest) or, by explicit choice, taken from the held-out rows ("heldout")."""
    if self_test_from not in SELF_TEST_SOURCES:
        raise CompileError(f"unknown self-test source {self_test_from!r} (choose from {', '.join(SELF_TEST_SOURCES)})")
    if target not in TARGET_CHOICES:
        raise CompileError(f"unknown target {target!r} (choose from {', '.join(TARGET_CHOICES)})")
    if quantize not in QUANTIZE_CHOICES:
        raise CompileError(f"unknown quantization {quantize!r} (choose from {', '.join(QUANTIZE_CHOICES)})")
    gate = gate or gates.Gate()
    analysis = analyse(estimator)
    model = analysis.model
    if y is None:
        raise BadInputError("held-out data: y is missing")
    check_named(X, analysis.feature_names, analysis.raw)
    specs: list[pb.ColumnSpec] = []
    if analysis.feature_names or model.accepts_missing:  # named and/or per-column missing values to tell
        specs = column_specs(
            n_features=model.n_features,
            feature_names=analysis.feature_names,
            dtypes=frame_dtypes(X) if is_frame(X) else None,
            raw=analysis.raw,
            segments=list(model.segments),
            native_missing=getattr(model, "native_missing", False),
        )
    # a model fitted on a DataFrame is given one (decoded from what a device sends) when its data is one
    by_frame = is_frame(X) or bool(analysis.raw.categories)
    x = _typed_data(X, y, model.n_features, specs, "held-out data")
    as_f64 = compares_scaled_categories(list(model.segments))  # see _source_outputs
    ref_x = x if reference_X is None else _typed_data(reference_X, None, model.n_features, specs, "reference data")
    cal_x = ref_x if calibration_X is None else _typed_data(calibration_X, None, model.n_features, specs,
                                                             "calibration data")  # fmt: skip

    multilabel = analysis.class_labels if analysis.multilabel else None
    labelled = analysis.classifier or analysis.multilabel  # judged on labels (a multilabel row: its label set)

    def source_of(rows: np.ndarray) -> list[str] | np.ndarray:
        given = decode_frame(rows, specs) if by_frame else rows
        return _source_outputs(estimator, given, analysis.classifier, as_f64, multilabel)

    source = source_of(x)
    io = io_schema(
        n_features=model.n_features,
        classifier=analysis.classifier,
        class_labels=analysis.class_labels,
        n_outputs=model.n_outputs,
        feature_names=analysis.feature_names,
        accepts_missing=model.accepts_missing,
        label_dtype=label_dtype(model),
    )
    io.columns.extend(specs)
    if multilabel is not None:  # the artifact outputs the probabilities ("values"); see TASK_MULTILABEL
        io.task = pb.TASK_MULTILABEL
    if labelled:
        if multilabel is not None:
            y_labels = label_sets(y, multilabel)
        else:
            y_labels = [label_str(v) for v in np.asarray(y).ravel()]
        source_metrics = gates.source_metrics_classifier(list(source), y_labels)
    else:
        y_values = np.asarray(y, dtype=np.float64)
        source_metrics = gates.source_metrics_regressor(np.asarray(source), y_values)
    report = CompileReport(analysis.estimator, model.family, labelled, source_metrics)

    targets = list(TARGETS) if target == "all" else [target]
    no_tflite = tflite_refusal(model) if target == "all" else None
    if no_tflite:  # a TFLite-only device cannot take this model; the ONNX artifact serves the others
        targets = ["onnx"]
        report.notes.append(f"no TFLite artifact: {no_tflite}")
    quantizations = list(QUANTIZATIONS_AUTO) if quantize == "auto" else [quantize]
    kept: list[tuple[Candidate, pb.Artifact, Prediction, LoadedModel]] = []
    for t in targets:
        trials = []
        for q, variant in plan(model, t, quantizations):
            candidate = build(model, t, q, variant, cal_x)
            record = artifact_record(
                candidate,
                classifier=analysis.classifier,
                requirement=requirement(model, t),
                label_output=label_dtype(model) is not None,
            )
            loaded = load_model(record, candidate.data, io)
            prediction = loaded.predict(x)
            if labelled:
                assert prediction.labels is not None
                verdict = gates.judge_classifier(prediction.labels, list(source), y_labels, gate)
            else:
                assert prediction.values is not None
                verdict = gates.judge_regressor(prediction.values, np.asarray(source), y_values, gate)
            record.metrics.update(verdict.metrics)
            trials.append((candidate, record, prediction, loaded, verdict))
        passing = [tr for tr in trials if tr[4].passed]
        chosen = min(passing, key=lambda tr: len(tr[0].data)) if passing else None
        for candidate, _, _, _, verdict in trials:
            report.candidates.append(
                CandidateReport(
                    candidate.name,
                    t,
                    candidate.quantization,
                    candidate.variant,
                    len(candidate.data),
                    candidate.compile_s,
                    dict(verdict.metrics),
                    verdict.passed,
                    verdict.reason,
                    chosen=chosen is not None and candidate is chosen[0],
                )
            )
        if chosen is not None and quantize == "auto":
            report.choices[t] = _why_chosen(chosen[0], [(c, v) for c, _, _, _, v in trials])
        if chosen is None:
            raise GateRefusedError(
                f"no {t} artifact of {analysis.estimator} passed the accuracy gate\n{report.table()}", report
            )
        kept.append(chosen[:4])

    fragment = pb.Manifest(io=io, source_model_sha256=estimator_digest(estimator))
    if report.notes:
        fragment.lineage[NOTES_KEY] = "; ".join(report.notes)
    for t, why in report.choices.items():
        fragment.lineage[f"{CHOICE_KEY}.{t}"] = why
    fragment.metrics.update(source_metrics)
    ref_source = source if reference_X is None else source_of(ref_x)
    categories = {j: list(c.categories) for j, c in enumerate(specs) if c.dtype == STRING}
    fragment.reference.CopyFrom(
        reference_profile(
            ref_x,
            ref_source,
            class_labels=analysis.class_labels,
            feature_names=analysis.feature_names,
            categories=categories,
        )
    )
    if analysis.classifier:  # the first kept artifact's scores: what a device serving it will count
        # on the held-out rows, not the reference rows: those are usually the training rows, on which a model
        # is more confident (digits, logreg: 65 % of rows at >= 0.99 against 61 % held out), so every field
        # would look less confident than its reference (confidence drift with no drift)
        confidence = confidence_profile(kept[0][2].scores)
        if confidence is not None:
            fragment.reference.confidence.CopyFrom(confidence)
    if multilabel is not None:
        # one histogram of "the row's label" counts only rows with exactly one label: each label's positive
        # rate replaces it, on the held-out rows like confidence (what a device serving the artifact counts)
        fragment.reference.ClearField("predictions")
        rates = label_rates(kept[0][2].values, multilabel)
        if rates is not None:
            fragment.reference.label_rates.CopyFrom(rates)
    if self_test_from == "synthetic":
        vector_x = synthetic_inputs(fragment.reference, max(SYNTHETIC_POOL_ROWS, 16 * n_self_test))
        if specs:
            vector_x = snap_codes(vector_x, specs)
        vector_source = source_of(vector_x)
        vector_kept = [(c, r, loaded.predict(vector_x), loaded) for c, r, _, loaded in kept]
    else:
        vector_x, vector_source, vector_kept = x, source, kept
    fragment.self_test.CopyFrom(_self_test(analysis, vector_x, vector_source, vector_kept, n_self_test))
    built = []
    for candidate, record, _, loaded in kept:
        result = run_self_test(loaded, fragment.self_test, io)
        if not result.passed:  # would mean the vectors are wrong, never the model: a compiler bug
            raise CompileError(f"{candidate.name} fails its own self-test: {result.detail}")
        fragment.artifacts.append(record)
        built.append(BuiltArtifact(record, candidate.data))
    return CompileResult(built, fragment, report)


def _describe(c: Candidate) -> str:
    return c.quantization if c.variant in ("", c.quantization) else f"{c.quantization} {c.variant}"


def _why_chosen(chosen: Candidate, trials: list[tuple[Candidate, gates.Verdict]]) -> str:
    """One line for the manifest: what `--quantize auto` kept, and why over each other candidate."""
    passed = [c for c, v in trials if v.passed]
    others = [f"{_describe(c)} {len(c.data):,} B" for c in passed if c is not chosen]
    refused = [f"{_describe(c)} {len(c.data):,} B: {v.reason}" for c, v in trials if not v.passed]
    line = f"auto kept {_describe(chosen)} ({len(chosen.data):,} B): the smallest of {len(passed)} passing the gate"
    if others:
        line += f" (also passed: {', '.join(others)})"
    if refused:
        line += f"; refused by the gate: {'; '.join(refused)}"
    return line


def _self_test(
    analysis: Analysis,
    x: np.ndarray,
    source: list[str] | np.ndarray,
    kept: list[tuple[Candidate, pb.Artifact, Prediction, LoadedModel]],
    n: int,
) -> pb.SelfTest:
    # fp32 first: its outputs are the expected ones
    ordered = sorted(kept, key=lambda k: (k[0].quantization != "none", k[0].target != "onnx"))
    predictions = [k[2] for k in ordered]
    if analysis.classifier:
        scores = [p.scores for p in predictions]
        assert all(s is not None for s in scores)
        rows = pick_classifier_rows([p.labels or [] for p in predictions], list(source), scores[0], n)  # type: ignore[arg-type]
        outputs: list[np.ndarray] = scores  # type: ignore[assignment]
        labels = list(source)
    else:
        outputs = [p.values for p in predictions]  # type: ignore[misc]
        rows = pick_regressor_rows(outputs[0], n)
        labels = None
    if not rows:
        raise CompileError("no held-out row on which every artifact agrees with the source: no self-test possible")
    return build_self_test(x, rows, outputs, labels)
