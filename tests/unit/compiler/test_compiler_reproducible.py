"""The same estimator, data and options give byte-identical artifacts, digests and fragments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from compiler_kit import Split, fit_quietly
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from model_compiler import compile_estimator
from model_compiler.manifest import fragment_json

ROOT = Path(__file__).resolve().parents[3]


def _mlp(data: Split) -> object:
    return fit_quietly(
        make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=40, random_state=0)), data.x_train, data.y_train
    )


@pytest.mark.parametrize(
    "make",
    [
        _mlp,
        lambda d: RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(d.x_train, d.y_train),
        lambda d: HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(d.x_train, d.y_train),
        # categorical splits (set-membership nodes) and skl2onnx's graph behind the compiler's preprocessing
        lambda d: HistGradientBoostingClassifier(max_iter=3, categorical_features=list(range(32, 40)), random_state=0)
        .fit(d.x_train, d.y_train),
        lambda d: make_pipeline(StandardScaler(), SVC()).fit(d.x_train, d.y_train),
    ],
    ids=["mlp", "forest", "hgb", "hgb_categorical", "svc"],
)
def test_same_inputs_give_identical_bytes(make: object, digits: Split) -> None:
    first = compile_estimator(
        make(digits),
        digits.x_test,
        digits.y_test,
        target="all",
        quantize="auto",  # type: ignore[operator]
        reference_X=digits.x_train,
    )
    again = compile_estimator(
        make(digits),
        digits.x_test,
        digits.y_test,
        target="all",
        quantize="auto",  # type: ignore[operator]
        reference_X=digits.x_train,
    )
    assert [b.data for b in first.artifacts] == [b.data for b in again.artifacts]
    assert [b.artifact.sha256 for b in first.artifacts] == [b.artifact.sha256 for b in again.artifacts]
    assert first.fragment.source_model_sha256 == again.fragment.source_model_sha256
    assert fragment_json(first.fragment) == fragment_json(again.fragment)


def test_a_different_model_gives_a_different_digest(digits: Split) -> None:
    a = compile_estimator(_mlp(digits), digits.x_test, digits.y_test, quantize="none")
    other = fit_quietly(
        make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=40, random_state=1)),
        digits.x_train,
        digits.y_train,
    )
    b = compile_estimator(other, digits.x_test, digits.y_test, quantize="none")
    assert a.artifacts[0].artifact.sha256 != b.artifacts[0].artifact.sha256
    assert a.fragment.source_model_sha256 != b.fragment.source_model_sha256


def test_cli_builds_are_identical_across_processes(tmp_path: Path, digits: Split) -> None:
    joblib.dump(_mlp(digits), tmp_path / "model.joblib")
    np.savez(tmp_path / "data.npz", X=digits.x_test, y=digits.y_test)
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cloud.cli",
                "compile",
                str(tmp_path / "model.joblib"),
                "--data",
                str(tmp_path / "data.npz"),
                "--target",
                "all",
                "--quantize",
                "int8",
                "--out",
                str(out),
            ],
            check=True,
            cwd=ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
            capture_output=True,
            timeout=120,
        )
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert outputs[0] == outputs[1]
    assert set(outputs[0]) == {"model.int8.onnx", "model.int8.tflite", "manifest.fragment.json"}
    fragment = json.loads(outputs[0]["manifest.fragment.json"])
    assert len(fragment["source_model_sha256"]) == 64
