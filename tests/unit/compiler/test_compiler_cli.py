"""`edgefleet compile`: writes artifacts and a fragment, prints the candidates, exits non-zero clearly."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
from compiler_kit import Split, fit_quietly
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from cloud.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, digits: Split) -> Path:
    root = tmp_path_factory.mktemp("cli")
    model = fit_quietly(
        make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=60, random_state=0)),
        digits.x_train,
        digits.y_train,
    )
    joblib.dump(model, root / "model.joblib")
    knn = KNeighborsClassifier(metric="cosine").fit(digits.x_train, digits.y_train)
    joblib.dump(knn, root / "knn.joblib")
    svc = make_pipeline(StandardScaler(), SVC()).fit(digits.x_train, digits.y_train)
    joblib.dump(svc, root / "svc.joblib")
    np.savez(root / "data.npz", X=digits.x_test, y=digits.y_test)
    np.savez(root / "train.npz", X=digits.x_train)
    return root


def test_compile_writes_artifacts_and_fragment(files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "compile",
            str(files / "model.joblib"),
            "--data",
            str(files / "data.npz"),
            "--target",
            "all",
            "--quantize",
            "auto",
            "--reference",
            str(files / "train.npz"),
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "Pipeline(StandardScaler, MLPClassifier) (mlp)" in printed
    assert "chosen" in printed and "accuracy" in printed
    names = sorted(p.name for p in out.iterdir())
    assert "manifest.fragment.json" in names and len(names) == 3
    fragment = json.loads((out / "manifest.fragment.json").read_text())
    assert fragment["io"]["n_features"] == 64
    assert fragment["io"]["class_labels"] == [str(c) for c in range(10)]
    assert fragment["reference"]["n_rows"] == str(len(np.load(files / "train.npz")["X"]))  # uint64 -> JSON string
    assert len(fragment["self_test"]["vectors"]) == 16
    for artifact in fragment["artifacts"]:
        data = (out / artifact["name"]).read_bytes()
        assert int(artifact["size_bytes"]) == len(data)
        assert artifact["metrics"]["agreement"] >= 0.99


def test_all_targets_of_an_onnx_only_family_say_why_in_output_and_fragment(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["compile", str(files / "svc.joblib"), "--data", str(files / "data.npz"), "--target", "all"]
    code = main([*args, "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "note: no TFLite artifact: SVC compiles to ONNX only, through skl2onnx" in printed
    assert "onnx: auto kept none (" in printed
    assert sorted(p.name for p in out.iterdir()) == ["manifest.fragment.json", "model.onnx"]
    fragment = json.loads((out / "manifest.fragment.json").read_text())
    assert fragment["lineage"]["compiler_notes"] == "no TFLite artifact: SVC compiles to ONNX only, through skl2onnx"
    assert fragment["artifacts"][0]["predicted_output"] == "label"


def test_refused_gate_exits_3_with_figures(files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "compile",
            str(files / "model.joblib"),
            "--data",
            str(files / "data.npz"),
            "--quantize",
            "int8",
            "--min-agreement",
            "1.0",  # INT8 of this model flips a few of the 540 held-out labels (deterministic)
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 3
    assert "refused by the accuracy gate" in err and "label agreement" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        ("knn.joblib", "data.npz", "not supported yet: KNeighborsClassifier(metric='cosine')"),
        ("missing.joblib", "data.npz", "model file not found"),
        ("model.joblib", "train.npz", "must hold arrays X and y"),
        ("data.npz", "data.npz", "cannot read"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    model: str, data: str, message: str, files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["compile", str(files / model), "--data", str(files / data), "--out", str(tmp_path / "out")])
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--self-test-vectors", "-5", "out of range"),
        ("--self-test-vectors", "0", "out of range"),
        ("--min-agreement", "2", "out of range"),
        ("--max-error-increase", "-1", "out of range"),
        ("--max-accuracy-drop", "lots", "not a number"),
    ],
)
def test_out_of_range_options_are_usage_errors(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, says: str
) -> None:
    args = ["compile", str(files / "model.joblib"), "--data", str(files / "data.npz"), "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as info:
        main([*args, option, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert option in err and says in err


def test_an_unwritable_output_directory_is_a_clear_error(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = main(["compile", str(files / "model.joblib"), "--data", str(files / "data.npz"),
                 "--quantize", "none", "--out", str(blocker / "out")])
    assert code == 2
    assert "cannot write to" in capsys.readouterr().err
