"""A device with valid credentials poisoning a field-data snapshot (cloud/registry/field_data.py): samples
of another width than the model's (which made the whole snapshot refuse, every device's rows with it),
labels sent on its own feedback topic for another device's prediction ids (bound to the topic's device:
they label nothing of the other's), samples claiming a version the registry never had. Published on a
real broker to a real cloud stack; the snapshot keeps the honest device's rows and labels."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import pytest
from sqlmodel import Session
from support import wait_until
from support.enrollment import enroll
from support.real_cloud import cloud, publish

from cloud.registry import field_data
from cloud.service import CloudService
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration
__all__ = ["cloud", "publish"]  # the real cloud's fixtures (tests/support/real_cloud.py), not the fake one


def _samples(device: str, seq: int, version: str, rows: list[tuple[str, list[float], str]]) -> bytes:
    ts = int(time.time() * 1000)
    samples = [pb.Sample(input=x, prediction="0", label=y, ts_ms=ts, prediction_id=pid, inclusion_probability=0.5)
               for pid, x, y in rows]  # fmt: skip
    model = pb.ModelRef(model_id="m", version=version)
    return pb.SampleBatch(schema_version=1, device_id=device, seq=seq, model=model, samples=samples).SerializeToString()


def test_a_device_cannot_poison_or_block_another_devices_field_data(
    cloud: CloudService, publish: Callable[[str, bytes], None]
) -> None:
    data = b"model-bytes" * 100
    manifest = pb.Manifest(model_id="m", version="1")
    manifest.io.n_features = 2
    manifest.artifacts.add(name="model.onnx", format=pb.ARTIFACT_FORMAT_ONNX, runtime="onnxruntime",
                           sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))  # fmt: skip
    version = cloud.register_model_version(manifest, {"model.onnx": data}).version
    enroll(cloud, "pi-honest")
    enroll(cloud, "pi-evil")
    publish(device_topic("pi-honest", Channel.SAMPLES, fleet=cloud.fleet),
            _samples("pi-honest", 1, version, [("p1", [1.0, 2.0], "a"), ("p2", [3.0, 4.0], "b")]))  # fmt: skip
    evil = [
        _samples("pi-evil", 1, version, [("p1", [9.0], "z")]),  # another width, the other device's id
        _samples("pi-evil", 2, version, [("e2", [0.0] * 5000, "z")]),
        _samples("pi-evil", 3, "999", [("e3", [7.0], "z")]),  # a version never registered
        pb.FeedbackBatch(
            schema_version=1,
            device_id="pi-evil",
            seq=1,
            items=[pb.Feedback(prediction_id="p1", label="z"), pb.Feedback(prediction_id="p2", label="z")],
        ).SerializeToString(),  # fmt: skip
    ]
    for i, payload in enumerate(evil):
        channel = Channel.FEEDBACK if i == 3 else Channel.SAMPLES
        publish(device_topic("pi-evil", channel, fleet=cloud.fleet), payload)
    assert cloud.ingestor is not None
    assert wait_until(lambda: cloud.ingestor.stats.received >= 5, 30), cloud.ingestor.stats.snapshot()
    assert cloud.ingestor.drain(30)
    assert cloud.store is not None
    with Session(cloud.engine) as session:
        dataset = field_data.snapshot(session, cloud.store, field_data.Selection("m"))
        rows = field_data.load(session, cloud.store, dataset.content_hash).rows
    assert [(r.device_id, r.prediction_id, r.label, r.input) for r in rows] == [
        ("pi-honest", "p1", "a", (1.0, 2.0)),
        ("pi-honest", "p2", "b", (3.0, 4.0)),
    ]
