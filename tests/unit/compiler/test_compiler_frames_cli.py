"""`edgefleet compile` on mixed-type data: held-out and reference data as a DataFrame in CSV, Parquet or
a pickle, beside .npz; the manifest fragment names and types the columns."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from support.mixed_frames import mixed_frame, mixed_front

from cloud.cli import main
from model_compiler import load_data
from model_compiler.errors import BadInputError


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    x, y = mixed_frame(700)
    model = make_pipeline(mixed_front(), LogisticRegression(max_iter=1000)).fit(x[:500], y[:500])
    joblib.dump(model, root / "model.joblib")
    held_out = x[500:].assign(churned=y[500:])
    held_out.to_csv(root / "heldout.csv", index=False)
    held_out.to_parquet(root / "heldout.parquet")
    joblib.dump(held_out, root / "heldout.pkl")
    joblib.dump({"X": x[500:], "y": y[500:]}, root / "heldout_xy.joblib")
    x[:500].to_parquet(root / "train.parquet")
    return root


@pytest.mark.parametrize("name", ["heldout.csv", "heldout.parquet", "heldout.pkl", "heldout_xy.joblib"])
def test_compile_reads_dataframes(files: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["compile", str(files / "model.joblib"), "--data", str(files / name), "--label", "churned"]
    code = main([*args, "--reference", str(files / "train.parquet"), "--quantize", "none", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    fragment = json.loads((out / "manifest.fragment.json").read_text())
    columns = fragment["io"]["columns"]
    assert [(c["name"], c["dtype"]) for c in columns] == [
        ("age", "float"), ("visits", "integer"), ("city", "string"), ("plan", "string"),
    ]  # fmt: skip
    assert fragment["artifacts"][0]["metrics"]["agreement"] == 1.0
    city = next(f for f in fragment["reference"]["features"] if f["name"] == "city")
    assert sum(int(c) for c in city["counts"]) == 500  # the reference came from train.parquet


def test_missing_label_column_is_a_clear_error(files: Path) -> None:
    with pytest.raises(BadInputError, match="no label column 'y' \\(choose it with --label\\)"):
        load_data(files / "heldout.csv")
    x, y = load_data(files / "heldout.csv", need_y=False)
    assert y is None and "churned" in x.columns  # as reference data, every column is X


def test_unreadable_frame_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(BadInputError, match="cannot read .*broken.parquet"):
        load_data(bad)
    not_frame = tmp_path / "list.pkl"
    joblib.dump([1, 2, 3], not_frame)
    with pytest.raises(BadInputError, match="holds a list, not a DataFrame"):
        load_data(not_frame)
