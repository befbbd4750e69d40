"""Per-label drift of a multilabel model end to end: a multilabel MLP is compiled (its reference: each
label's positive rate on the held-out rows), signed, delivered over a real broker to a real agent
(onnxruntime); the agent's telemetry windows, as published, go through the cloud's ingestion into a
database, and the drift report tests each label's rows off and on. A window whose inputs turn one label
on far more often is flagged on that label; the other labels, and a clean window, are not.

Before per-label drift, a multilabel model's only output drift was the "predicted class" histogram, which
counts a row only when exactly one label is on: here it saw under half the rows, and a label turning on
beside another moved rows out of it rather than into its own bin."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sqlmodel import Session
from support.enrollment import enroll
from support.fake_cloud import CHUNK_REQUESTS, FakeCloud
from support.releases import FLEET, Release, make_keys

from cloud import registry
from cloud.db import create_tables, make_engine
from cloud.monitoring import Ingestor, device_drift
from cloud.registry.artifacts import MemoryArtifactStore
from edge_agent.agent import Agent
from edge_agent.config import load_settings
from edge_agent.connect import transport_for
from model_compiler import compile_estimator
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration

DEVICE = "pi-multilabel-1"
LABELS = 4
ROWS = 800  # per window: all sketched (SKETCH_EXACT_ROWS is 1024)


def _data(rows: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Label j is on when features 2j and 2j+1 add up above 0 (plus noise): labels independent of each
    other, so shifting features 0 and 1 moves label 0 only."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2 * LABELS))
    x[:, :2] += shift
    y = (x[:, 0::2] + x[:, 1::2] + rng.normal(scale=0.3, size=(rows, LABELS)) > 0).astype(int)
    return x.astype(np.float32), y


def test_a_drifted_label_is_flagged_and_the_clean_ones_are_not(
    tmp_path: Path, mqtt_broker: Any, make_transport: Any, database_url: str
) -> None:
    x, y = _data(3000, seed=0)
    model = make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=300, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x[:1500], y[:1500])
    result = compile_estimator(model, x[1500:], y[1500:], target="onnx", quantize="none")
    reference = result.fragment.reference
    rates = reference.label_rates
    assert list(rates.labels) == ["0", "1", "2", "3"] and rates.rows == 1500
    predicted_on = (model.predict(x[1500:]) > 0.5).sum(axis=0).tolist()
    assert list(rates.positives) == predicted_on  # the artifact agrees with scikit-learn on every row here
    assert not reference.predictions.counts  # no "predicted class" histogram: it meant nothing here

    manifest = pb.Manifest(model_id="tags", version="1", sequence=1, created_at_ms=int(time.time() * 1000))
    manifest.MergeFrom(result.fragment)
    keys = make_keys(tmp_path / "keys")
    release = Release.of(keys.signer.sign(manifest), [b.data for b in result.artifacts], keys)
    engine = make_engine(database_url)
    create_tables(engine)
    with Session(engine) as session:  # the cloud's copy, for the report's reference
        registry.register_model_version(
            session, manifest, {b.artifact.name: b.data for b in result.artifacts},
            store=MemoryArtifactStore(), signer=keys.signer,
        )  # fmt: skip
        session.commit()
    enroll(engine, DEVICE)

    cloud_transport, _ = make_transport()
    cloud = FakeCloud(cloud_transport, chunk_size=4096, topic_filter=CHUNK_REQUESTS, start=False)
    cloud.deploy(DEVICE, release, generation=1)
    _, published = make_transport(device_topic(DEVICE, Channel.TELEMETRY, fleet=FLEET))
    settings = load_settings(
        device_id=DEVICE,
        mqtt_url=mqtt_broker.url,
        mqtt_protocol=mqtt_broker.mqtt_protocol,
        trust_path=keys.trust_path,
        state_dir=tmp_path / "state",
        grpc_address="",
        chunk_timeout_s=2.0,
        telemetry_first_window_rows=0,  # one window per flush below
    )
    agent = Agent(settings, transport_for(settings, reconnect_min_s=0.1, reconnect_max_s=1.0))
    agent.start()
    try:
        assert agent.wait_for(lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE, 30), agent.status()
        published.clear()  # windows before the model served carry no counts
        windows = []
        for seed, shift in ((1, 0.0), (2, 1.0)):  # a clean window, then one where label 0 turns on more often
            live, _ = _data(ROWS, seed=seed, shift=shift)
            for batch in np.array_split(live, 20):
                agent.predict(batch)
            window = agent.flush_telemetry()
            assert window is not None and window.inference_count == ROWS
            on = (model.predict(live) > 0.5).sum(axis=0).tolist()
            assert list(window.label_counts) == [ROWS, *on]  # rows counted, then each label's rows on
            windows.append(window)
        # the single-label histogram the agent still sends (older clouds, rollout gates) misses most rows, and
        # labels 1-3 all but vanish from it in the shifted window (rows now carry label 0 beside them), though
        # their positive rates do not move (the report below)
        single = [list(w.predictions.counts) for w in windows]
        assert list(windows[0].predictions.labels) == ["0", "1", "2", "3"] and sum(single[0]) < ROWS / 2
        assert sum(single[1][1:]) < sum(single[0][1:]) / 2
        assert published.wait_for(2, 10), published.topics()
    finally:
        agent.stop()

    ingestor = Ingestor(engine, fleet=FLEET)
    ingestor.process(published.messages)  # the two windows, and any the agent's stop flushed
    assert ingestor.stats.stored == len(published.messages) >= 2 and not ingestor.stats.implausible, ingestor.stats
    with Session(engine) as session:
        report = device_drift(session, DEVICE)
    engine.dispose()
    assert [line.name for line in report.labels] == ["0", "1", "2", "3"]
    drifted = {line.name: line.drifted for line in report.labels}
    assert drifted == {"0": True, "1": False, "2": False, "3": False}, report.labels
    label0 = report.labels[0]
    assert label0.observed_rate is not None and label0.reference_rate is not None
    assert label0.observed_rate > label0.reference_rate + 0.1 and label0.n_observed == 2 * ROWS
    assert report.drifted_windows == 1  # the shifted window only; the clean one has nothing drifted
    assert report.attribution is not None and report.attribution.devices[0].labels == [0]
    assert report.predictions.level == "no_data"  # no single-label histogram is tested for a multilabel model
