"""Named, typed inputs end to end: a ColumnTransformer pipeline over a DataFrame with string categories
is compiled, signed, delivered over a real broker to a real agent (onnxruntime), and queried over gRPC
with named columns; its answers are scikit-learn's, unknown categories and missing values included, and
what the fitted pipeline would refuse is refused with INVALID_ARGUMENT naming the column."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from support.fake_cloud import CHUNK_REQUESTS, FakeCloud
from support.mixed_frames import mixed_frame, mixed_front
from support.releases import Release, make_keys

from edge_agent.agent import Agent
from edge_agent.config import load_settings
from edge_agent.connect import transport_for
from edge_agent.serving.grpc_server import start_grpc_server
from model_compiler import compile_estimator
from model_compiler.columns import encode_frame
from protocols.v1 import agent_pb2, agent_pb2_grpc
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration


def _columns(frame: Any) -> list[agent_pb2.Column]:
    """A DataFrame as gRPC columns: numbers (NaN for missing) or strings with `missing` flags."""
    out = []
    for name in frame.columns:
        values = frame[name].tolist()
        if frame[name].dtype.kind in "fiub":
            out.append(agent_pb2.Column(name=name, numbers=[float(v) for v in values]))
        else:
            missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in values]
            strings = ["" if m else str(v) for v, m in zip(values, missing, strict=True)]
            out.append(agent_pb2.Column(name=name, strings=strings, missing=missing))
    return out


def test_columntransformer_with_strings_served_over_grpc_by_name(
    tmp_path: Path, mqtt_broker: Any, make_transport: Any
) -> None:
    x, y = mixed_frame(700, seed=1)
    model = make_pipeline(mixed_front(), LogisticRegression(max_iter=1000)).fit(x[:500], y[:500])
    held_out, y_held = x[500:].reset_index(drop=True), y[500:]
    result = compile_estimator(model, held_out, y_held, target="onnx", quantize="none")
    manifest = pb.Manifest(model_id="churn", version="1", sequence=1, created_at_ms=int(time.time() * 1000))
    manifest.MergeFrom(result.fragment)
    keys = make_keys(tmp_path / "keys")
    release = Release.of(keys.signer.sign(manifest), [b.data for b in result.artifacts], keys)

    cloud_transport, _ = make_transport()
    cloud = FakeCloud(cloud_transport, chunk_size=1024, topic_filter=CHUNK_REQUESTS, start=False)
    cloud.deploy("pi-named-1", release, generation=1)
    settings = load_settings(
        device_id="pi-named-1",
        mqtt_url=mqtt_broker.url,
        mqtt_protocol=mqtt_broker.mqtt_protocol,
        trust_path=keys.trust_path,
        state_dir=tmp_path / "state",
        grpc_address="",
        chunk_timeout_s=2.0,
        telemetry_first_window_rows=0,  # every call in the one window the test flushes (no early first window)
    )
    agent = Agent(settings, transport_for(settings, reconnect_min_s=0.1, reconnect_max_s=1.0))
    agent.start()
    server = None
    try:
        assert agent.wait_for(lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE, 30), agent.status()
        server = start_grpc_server(agent, "127.0.0.1:0")
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = agent_pb2_grpc.EdgeInferenceStub(channel)
            batch = held_out.iloc[:40].copy()
            batch.loc[0, "city"] = "marseille"  # unknown: one-hot all zeros, as handle_unknown="ignore"
            batch.loc[1, "plan"] = np.nan  # imputed with the most frequent plan
            batch.loc[2, "age"] = np.nan  # imputed with the median
            shuffled = batch[["plan", "city", "visits", "age"]]  # columns go by name, in any order
            reply = stub.Predict(agent_pb2.PredictRequest(columns=_columns(shuffled)), timeout=5)
            assert list(reply.labels) == [str(v) for v in model.predict(batch)]
            assert reply.model.model_id == "churn"

            # the float-matrix form still answers (strings as their codes)
            rows = encode_frame(batch.iloc[3:5], list(manifest.io.columns), "rows")
            reply = stub.Predict(agent_pb2.PredictRequest(values=rows.reshape(-1).tolist(), rows=2), timeout=5)
            assert list(reply.labels) == [str(v) for v in model.predict(batch.iloc[3:5])]

            def refused(columns: list[agent_pb2.Column]) -> str:
                with pytest.raises(grpc.RpcError) as info:
                    stub.Predict(agent_pb2.PredictRequest(columns=columns), timeout=5)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                return str(info.value.details())

            one = _columns(batch.iloc[:1])
            bad_plan = [c if c.name != "plan" else agent_pb2.Column(name="plan", strings=["gold"]) for c in one]
            assert "column 'plan': unknown category 'gold'" in refused(bad_plan)
            assert "missing column(s) 'visits'" in refused([c for c in one if c.name != "visits"])
            assert "unknown column(s) 'colour'" in refused([*one, agent_pb2.Column(name="colour", strings=["red"])])
            as_numbers = [c if c.name != "city" else agent_pb2.Column(name="city", numbers=[1.0]) for c in one]
            assert "column 'city' (string): send strings" in refused(as_numbers)
            fractional = [c if c.name != "visits" else agent_pb2.Column(name="visits", numbers=[2.5]) for c in one]
            assert "column 'visits' (integer)" in refused(fractional)

            status = stub.Status(agent_pb2.StatusRequest(), timeout=5)
            assert status.inference_count == 42 and status.error_count == 0  # refused calls are not the model's

        window = agent.flush_telemetry()
        assert window is not None and window.inference_count == 42
    finally:
        if server is not None:
            server.stop(0)
        agent.stop()
