"""Telemetry windows with one drifted feature on chosen devices, ingested for real: the alert tests' fleet."""

from __future__ import annotations

from sqlalchemy import Engine

from cloud.monitoring import Ingestor
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

CLEAN, SHIFTED = [52, 48, 51, 49], [10, 20, 70, 100]  # shares .05 .1 .35 .5 against .25 each: bins 3, 2


def ingest_drift_windows(engine: Engine, devices: list[str], odd: set[str], end_ms: int) -> None:
    """Three windows per device of model m@1 ending at end_ms: feature 0 clean, feature 1 SHIFTED on `odd`."""
    windows = [
        pb.TelemetryWindow(
            schema_version=1, device_id=d, seq=end_ms // 1000 + seq, window_start_ms=end_ms - 60_000 + seq,
            window_end_ms=end_ms + seq, model=pb.ModelRef(model_id="m", version="1"),
            features=[pb.FeatureSketch(index=0, counts=CLEAN),
                      pb.FeatureSketch(index=1, counts=SHIFTED if d in odd else CLEAN)],
            predictions=pb.PredictionProfile(labels=["a", "b"], counts=[99, 101]),
        )
        for d in devices for seq in (1, 2, 3)
    ]  # fmt: skip
    Ingestor(engine, clock=lambda: end_ms + 60_000).process(
        [(device_topic(w.device_id, Channel.TELEMETRY), w.SerializeToString()) for w in windows]
    )
