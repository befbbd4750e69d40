"""Gate figures read back from telemetry windows ingested the real way, per model version and period."""

from __future__ import annotations

import time

from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll

from cloud.monitoring import Ingestor
from cloud.rollout.figures import figures_for
from cloud.rollout.gates import ArmFigures
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

NOW = int(time.time() * 1000)


def window(device_id: str, seq: int, version: str, *, ok: int, errors: int, slow: bool, labels: list[int]) -> bytes:
    latency = [0, 0, ok] if slow else [ok, 0, 0]  # bins <=100 µs, <=200 µs, above
    return pb.TelemetryWindow(
        schema_version=1, device_id=device_id, seq=seq,
        window_start_ms=NOW - 60_000 + seq * 1000, window_end_ms=NOW - 59_000 + seq * 1000,
        model=pb.ModelRef(model_id="m", version=version, sequence=int(version)),
        inference_count=ok, error_count=errors,
        latency_us=pb.Histogram(bounds=[100, 200], counts=latency),
        predictions=pb.PredictionProfile(labels=["cat", "dog"], counts=labels),
    ).SerializeToString()  # fmt: skip


def test_each_arm_sums_its_own_model_version_devices_and_period(any_engine: Engine) -> None:
    enroll(any_engine, "a", "b", "c")
    messages = [
        ("a", window("a", 1, "1", ok=100, errors=0, slow=False, labels=[50, 50])),
        ("a", window("a", 2, "2", ok=90, errors=10, slow=True, labels=[80, 10])),
        ("b", window("b", 1, "2", ok=100, errors=0, slow=True, labels=[70, 30])),
        ("c", window("c", 1, "2", ok=500, errors=0, slow=False, labels=[250, 250])),  # not in the arm
    ]
    Ingestor(any_engine).process([(device_topic(d, Channel.TELEMETRY), m) for d, m in messages])
    with Session(any_engine) as session:
        new = figures_for(session, ["a", "b"], "m", "2", since_ms=0)
        old = figures_for(session, ["a", "b"], "m", "1", since_ms=0)
        later = figures_for(session, ["a", "b"], "m", "2", since_ms=NOW)
        assert figures_for(session, [], "m", "2", since_ms=0) == ArmFigures()
    assert (new.devices, new.inferences, new.errors) == (2, 190, 10)
    assert new.predictions == {"cat": 150, "dog": 40}
    assert new.p95_latency_us is not None and new.p95_latency_us >= 200  # all in the top bin (its lower edge)
    assert (old.devices, old.inferences, old.predictions) == (1, 100, {"cat": 50, "dog": 50})
    assert old.p95_latency_us is not None and old.p95_latency_us <= 100
    assert later == ArmFigures()  # nothing ended after NOW
