"""Field datasets: labelled samples -> canonical bytes -> a content hash, with provenance, in the store."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.db.tables import SampleRecord
from cloud.errors import InvalidRequestError
from cloud.monitoring import feedback
from cloud.registry import field_data
from cloud.registry.artifacts import MemoryArtifactStore
from cloud.registry.field_data import FieldRow, Selection
from protocols.v1 import messages_pb2 as pb


def _row(device: str, pid: str, x: float, label: str = "a") -> FieldRow:
    return FieldRow(device, pid, "1", 1_000, "a", label, "api", (x, 0.1))


def test_the_hash_is_of_the_rows_not_of_their_order() -> None:
    rows = [_row("d1", "1", 0.5), _row("d2", "1", 1.5), _row("d1", "2", 2.5)]
    one = field_data.canonical_bytes("m", rows)
    assert one == field_data.canonical_bytes("m", list(reversed(rows)))
    parsed = field_data.parse(one)
    assert parsed.content_hash == hashlib.sha256(one).hexdigest()
    assert [(r.device_id, r.prediction_id) for r in parsed.rows] == [("d1", "1"), ("d1", "2"), ("d2", "1")]
    assert parsed.X.dtype.name == "float32" and parsed.X.shape == (3, 2)


@pytest.mark.parametrize("change", ["input", "label", "device", "model"])
def test_any_change_to_the_content_changes_the_hash(change: str) -> None:
    rows = [_row("d1", "1", 0.5), _row("d2", "1", 1.5)]
    base = hashlib.sha256(field_data.canonical_bytes("m", rows)).hexdigest()
    changed = {
        "input": (rows[:1] + [_row("d2", "1", 1.5000001)], "m"),  # one float32 ulp away
        "label": (rows[:1] + [_row("d2", "1", 1.5, label="b")], "m"),
        "device": (rows[:1] + [_row("d3", "1", 1.5)], "m"),
        "model": (rows, "other"),
    }[change]
    assert hashlib.sha256(field_data.canonical_bytes(changed[1], changed[0])).hexdigest() != base


def test_bytes_that_are_not_a_field_dataset_are_refused_clearly() -> None:
    with pytest.raises(InvalidRequestError, match="not a field dataset"):
        field_data.parse(b'{"format":"something-else"}\n')
    with pytest.raises(InvalidRequestError, match="not a field dataset"):
        field_data.parse(b"\xff\xfe")
    with pytest.raises(InvalidRequestError, match="different numbers of features"):
        field_data.canonical_bytes("m", [_row("d1", "1", 0.5), FieldRow("d1", "2", "1", 1, "a", "a", "api", (1.0,))])


def test_split_is_stable_as_the_data_grows() -> None:
    rows = [_row(f"d{i % 3}", str(i), float(i)) for i in range(400)]
    train, held = field_data.split(rows, 0.5)
    assert 140 < len(held) < 260 and len(train) + len(held) == 400
    more_train, more_held = field_data.split(rows + [_row("d9", str(i), 0.0) for i in range(50)], 0.5)
    assert set(held) <= set(more_held) and set(train) <= set(more_train)
    with pytest.raises(InvalidRequestError):
        field_data.split(rows, 1.0)


def _sample(device: str, pid: str, x: float, *, version: str = "1", label: str | None = None, ts: int = 1_000):
    return SampleRecord(
        device_id=device,
        batch_seq=1,
        position=int(pid),
        model_id="m",
        model_version=version,
        input=[x, 0.25],
        prediction="a",
        label=label,
        ts_ms=ts,
        prediction_id=pid,
    )


def test_snapshot_joins_late_labels_keeps_provenance_and_stores_the_bytes(any_engine: Engine, register) -> None:
    store = MemoryArtifactStore()
    with Session(any_engine) as session:
        register(session, "m")
        session.add_all([
            _sample("d1", "0", 0.1),                      # labelled later through the API
            _sample("d1", "1", 0.2, label="a"),            # labelled on the device; a later label wins
            _sample("d2", "0", 0.3, label="b", ts=5_000),  # the device's own label only
            _sample("d2", "1", 0.4),                       # never labelled: left out
            _sample("d3", "0", 0.5, version="2", label="a"),
        ])  # fmt: skip
        feedback.record(session, [feedback.Label("d1", "0", "b"), feedback.Label("d1", "1", "c")])
        session.commit()
        first = field_data.snapshot(session, store, Selection("m", versions=("1",)))
        session.commit()
        again = field_data.snapshot(session, store, Selection("m", versions=("1",)))
        loaded = field_data.load(session, store, first.content_hash)
        only_d2 = field_data.snapshot(session, store, Selection("m", devices=("d2",), since_ms=2_000))
        with pytest.raises(InvalidRequestError, match="nothing to snapshot"):
            field_data.snapshot(session, store, Selection("m", devices=("nobody",)))
    assert again.content_hash == first.content_hash and store.exists(first.content_hash)
    assert (first.kind, first.n_rows, first.n_features) == ("field", 3, 2)
    assert [(r.device_id, r.prediction_id, r.label, r.label_source) for r in loaded.rows] == [
        ("d1", "0", "b", "api"),
        ("d1", "1", "c", "api"),
        ("d2", "0", "b", "device"),
    ]
    assert first.provenance["devices"] == ["d1", "d2"] and first.provenance["model_versions"] == ["1"]
    assert first.provenance["window_ms"] == [1_000, 5_000]
    assert first.provenance["label_sources"] == {"api": 2, "device": 1}
    assert only_d2.n_rows == 1 and only_d2.content_hash != first.content_hash


def test_string_category_codes_are_decoded_by_the_manifests_columns(engine: Engine, signer, store) -> None:
    """A real ColumnTransformer model with string columns: the device samples category codes; the field
    dataset holds them decoded to the strings its reference data holds (missing -> None, a category the
    model did not know -> UNKNOWN), so a retrain can add field rows to the reference DataFrame."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from support.mixed_frames import CITIES, PLANS, mixed_frame, mixed_front

    from cloud import registry
    from model_compiler import compile_estimator
    from model_compiler.columns import encode_frame

    x, y = mixed_frame(400, seed=3)
    model = make_pipeline(mixed_front(), LogisticRegression(max_iter=1000)).fit(x[:300], y[:300])
    held = x[300:].reset_index(drop=True)
    result = compile_estimator(model, held, y[300:], target="onnx", quantize="none")
    manifest = pb.Manifest(model_id="churn")
    manifest.MergeFrom(result.fragment)
    artifacts = {b.artifact.name: b.data for b in result.artifacts}
    field = held.iloc[:30].copy()
    field.loc[4, "city"] = "rome"  # unknown to the model: its encoder ignores it
    codes = encode_frame(field, list(result.fragment.io.columns), "field rows")
    assert np.isnan(codes).any()  # plan has missing values: sampled as NaN codes
    with Session(engine) as session:
        mv = registry.register_model_version(session, manifest, artifacts, store=store, signer=signer)
        session.commit()
        session.add_all([
            SampleRecord(device_id="d1", batch_seq=1, position=i, model_id="churn", model_version=mv.version,
                         input=[float(v) for v in row], prediction="1", label=str(y[300 + i]), ts_ms=1_000 + i,
                         prediction_id=str(i))
            for i, row in enumerate(codes)
        ])  # fmt: skip
        session.commit()
        dataset = field_data.load(session, store, field_data.snapshot(session, store, Selection("churn")).content_hash)
    frame = dataset.frame()
    order = [int(r.prediction_id) for r in dataset.rows]
    expected = field.iloc[order].reset_index(drop=True)
    assert list(frame.columns) == list(x.columns)
    assert frame["city"].tolist() == [field_data.UNKNOWN if c == "rome" else c for c in expected["city"]]
    plan = list(x.columns).index("plan")
    assert [r.values[plan] for r in dataset.rows] == [None if p != p else p for p in expected["plan"]]
    assert set(frame["plan"].dropna()) <= set(PLANS) and set(frame["city"]) <= {*CITIES, field_data.UNKNOWN}
    np.testing.assert_array_equal(frame["visits"].to_numpy(), expected["visits"].to_numpy(dtype=float))
    # the codes the artifacts read are kept beside the decoded values
    np.testing.assert_array_equal(dataset.X, codes[order])
    # a retrain adds the field rows to the reference DataFrame: strings with strings, not codes
    combined = pd.concat([x[:300], frame], ignore_index=True)
    make_pipeline(mixed_front(), LogisticRegression(max_iter=1000)).fit(
        combined, np.concatenate([y[:300], y[300:330][order]])
    )
