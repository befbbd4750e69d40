"""A device with valid credentials trying to silence the cloud's alerts (cloud/monitoring/alerts.py): its
samples name made-up model versions (the registry has none of them) in numbers past the evaluation's cap,
and a sample claims an inclusion probability so small its weight overflowed the Horvitz-Thompson estimate.
Published on a real broker to a real cloud stack: the real model's accuracy alert is still raised."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import pytest
from sqlmodel import Session
from support import wait_until
from support.enrollment import enroll
from support.real_cloud import cloud, publish

from cloud.monitoring import alerts
from cloud.service import CloudService
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration
__all__ = ["cloud", "publish"]  # the real cloud's fixtures (tests/support/real_cloud.py), not the fake one


def _batch(device: str, seq: int, model_id: str, version: str, n: int) -> bytes:
    ts = int(time.time() * 1000)
    samples = [pb.Sample(input=[1.0, 2.0], prediction="0", label="1", ts_ms=ts, prediction_id=f"{seq}-{i}",
                         inclusion_probability=0.5) for i in range(n)]  # fmt: skip
    model = pb.ModelRef(model_id=model_id, version=version)
    return pb.SampleBatch(schema_version=1, device_id=device, seq=seq, model=model, samples=samples).SerializeToString()


def test_made_up_versions_do_not_crowd_out_a_real_models_alert(
    cloud: CloudService, publish: Callable[[str, bytes], None]
) -> None:
    data = b"model-bytes" * 100
    manifest = pb.Manifest(model_id="m", version="1")
    manifest.io.task = pb.TASK_CLASSIFICATION
    manifest.io.n_features = 2
    manifest.metrics["accuracy"] = 0.95
    manifest.artifacts.add(name="model.onnx", format=pb.ARTIFACT_FORMAT_ONNX, runtime="onnxruntime",
                           sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))  # fmt: skip
    version = cloud.register_model_version(manifest, {"model.onnx": data}).version
    enroll(cloud, "pi-honest")
    enroll(cloud, "pi-evil")
    publish(device_topic("pi-honest", Channel.SAMPLES, fleet=cloud.fleet), _batch("pi-honest", 1, "m", version, 40))
    cap = alerts.DEFAULT_POLICY.max_versions
    evil = device_topic("pi-evil", Channel.SAMPLES, fleet=cloud.fleet)
    for i in range(cap + 5):  # "a" sorts before "m"
        publish(evil, _batch("pi-evil", i + 1, "a", f"{i:04d}", 1))
    assert cloud.ingestor is not None
    assert wait_until(lambda: cloud.ingestor.stats.received >= cap + 6, 30), cloud.ingestor.stats.snapshot()
    assert cloud.ingestor.drain(30)
    with Session(cloud.engine) as session:
        raised = alerts.evaluate(session)
    assert [(a.kind, a.model_id, a.version) for a in raised] == [("accuracy", "m", version)]
