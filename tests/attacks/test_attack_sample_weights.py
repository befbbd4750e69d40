"""A device with valid credentials lying about its sampler (Sample.inclusion_probability 0, negative, NaN,
above 1, so tiny that 1 / p overflows; confidence NaN) and its telemetry's confidence_counts (more than
its inferences, huge, thousands of bins): published on a real broker to a real cloud stack, the
implausible ones are refused at ingestion, and the field accuracy (the Horvitz-Thompson estimate) still
answers over what was kept."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytest
from sqlmodel import Session
from support import wait_until
from support.enrollment import enroll
from support.real_cloud import cloud, publish

from cloud.monitoring.feedback import field_accuracy, summarise
from cloud.service import CloudService
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration
__all__ = ["cloud", "publish"]  # the real cloud's fixtures (tests/support/real_cloud.py), not the fake one


def settle(cloud: CloudService, received: int) -> None:
    assert cloud.ingestor is not None
    assert wait_until(lambda: cloud.ingestor.stats.received >= received, 30), cloud.ingestor.stats.snapshot()
    assert cloud.ingestor.drain(30)


def _batch(seq: int, p: float, confidence: float = 0.9, prediction: str = "1") -> bytes:
    ts = int(time.time() * 1000)
    sample = pb.Sample(input=[1.0], prediction=prediction, label="1", ts_ms=ts, prediction_id=f"s{seq}",
                       inclusion_probability=p, confidence=confidence)  # fmt: skip
    return pb.SampleBatch(schema_version=1, device_id="pi-01", seq=seq, model=pb.ModelRef(model_id="m", version="1"),
                          samples=[sample]).SerializeToString()  # fmt: skip


def test_lying_inclusion_probabilities_are_refused_and_the_estimate_still_answers(
    cloud: CloudService, publish: Callable[[str, bytes], None]
) -> None:
    import hashlib

    data = b"model-bytes" * 100
    manifest = pb.Manifest(model_id="m", version="1")
    manifest.artifacts.add(name="model.onnx", format=pb.ARTIFACT_FORMAT_ONNX, runtime="onnxruntime",
                           sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))  # fmt: skip
    version = cloud.register_model_version(manifest, {"model.onnx": data}).version
    enroll(cloud, "pi-01")
    topic = device_topic("pi-01", Channel.SAMPLES, fleet=cloud.fleet)
    lies = [_batch(1, -0.5), _batch(2, math.nan), _batch(3, 1.5), _batch(4, 5e-324), _batch(5, 1e-200),
            _batch(6, 0.5, confidence=math.nan), _batch(7, 0.5, confidence=-1.0)]  # fmt: skip
    for payload in lies:
        publish(topic, payload)
    honest = [_batch(10, 0.5), _batch(11, 0.25, prediction="0"), _batch(12, 0.0), _batch(13, 1e-6)]
    for payload in honest:
        publish(topic, payload)
    settle(cloud, len(lies) + len(honest))
    assert cloud.ingestor is not None and cloud.ingestor.stats.implausible == len(lies), cloud.ingestor.stats.snapshot()
    with Session(cloud.engine) as session:
        [line] = field_accuracy(session, "m", version)
    assert line.labelled == len(honest)
    assert line.weighted is not None and 0.0 <= line.weighted <= 1.0 and math.isfinite(line.effective_n or 0.0)


def test_the_estimate_survives_weights_whose_squares_overflow() -> None:
    # what a cloud holding such a row from before the ingestion check would compute (it raised OverflowError)
    [line] = summarise([("v", "1", "1", 1e-200), ("v", "0", "1", 0.5), ("v", "1", "1", 0.5)])
    assert line.weighted is not None and math.isclose(line.weighted, 1.0)


def test_lying_confidence_counts_are_refused(cloud: CloudService, publish: Callable[[str, bytes], None]) -> None:
    enroll(cloud, "pi-01")
    ts = int(time.time() * 1000)
    topic = device_topic("pi-01", Channel.TELEMETRY, fleet=cloud.fleet)

    def window(seq: int, inferences: int, counts: list[int]) -> bytes:
        return pb.TelemetryWindow(schema_version=1, device_id="pi-01", seq=seq, window_start_ms=ts - 60_000,
                                  window_end_ms=ts, inference_count=inferences,
                                  confidence_counts=counts).SerializeToString()  # fmt: skip

    lies = [window(1, 10, [5, 6]), window(2, 10, [2**64 - 1]), window(3, 2**63 + 5, [2**63 + 5]),
            window(4, 10, [0] * 200_000)]  # fmt: skip
    for payload in lies:
        publish(topic, payload)
    publish(topic, window(5, 10, [4, 6]))
    settle(cloud, len(lies) + 1)
    assert cloud.ingestor is not None and cloud.ingestor.stats.implausible == len(lies), cloud.ingestor.stats.snapshot()
    assert cloud.ingestor.stats.snapshot()["stored"] >= 1
