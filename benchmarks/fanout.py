"""Cloud bytes sent per device updated: every chunk on each device's own topic (before) against one upload
per rollout on the fleet-wide topics (after), side by side in one run, on Mosquitto, with real agents.

For each fleet size and each mode a fresh Mosquitto, cloud (SQLite) and fleet of simulated devices (the
real agent code) run one all-at-once deployment of a digits MLP (INT8 ONNX) until every device runs it.
Every message the cloud publishes in that window is counted (topic + payload bytes, as a broker receives
it less the fixed MQTT header), then split into artifact chunks (fan-out or per device) and the rest
(desired states, the trust chain).

    .venv/bin/python benchmarks/fanout.py [--devices 20,100] [--chunk-size 4096] [--hidden 1024]

Devices past ~140 in one process never connect (paho's select(), see benchmarks/rollout.py). Prints one
JSON object last: {"records": [{devices, mode, rollout_s, cloud_bytes, cloud_bytes_per_device, ...}],
"ratios": {devices: per_device / fanout}}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rollout import Mosquitto  # noqa: E402  (benchmarks/rollout.py: a Mosquitto of the benchmark's own)
from sqlmodel import Session  # noqa: E402

from cloud import registry  # noqa: E402
from cloud.db.tables import DeploymentCreate  # noqa: E402
from cloud.identity.enrollment import enroll_device  # noqa: E402
from cloud.service import CloudService  # noqa: E402
from cloud.settings import CloudSettings  # noqa: E402
from cloud.training.pipeline import TrainingConfig, run_training_pipeline  # noqa: E402
from protocols.v1 import messages_pb2 as pb  # noqa: E402
from simulator.devices import SimulatedFleet  # noqa: E402

MODEL_ID = "digits-mlp"


class Meter:
    """Wraps the cloud transport's publish: bytes per kind of topic, while `on`."""

    def __init__(self, transport: Any) -> None:
        self.lock = threading.Lock()
        self.on = False
        self.bytes = {"fanout": 0, "per_device_chunks": 0, "other": 0}
        self.messages = {"fanout": 0, "per_device_chunks": 0, "other": 0}
        inner = transport.publish

        def publish(topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
            inner(topic, payload, qos, retain)
            chunks = "per_device_chunks" if topic.endswith("/artifact/data") else "other"
            kind = "fanout" if "/art/" in topic else chunks
            with self.lock:
                if self.on:
                    self.bytes[kind] += len(topic) + len(payload)
                    self.messages[kind] += 1

        transport.publish = publish  # every part of the cloud publishes through this one transport object


def run(devices: int, fanout: bool, chunk_size: int, hidden: int, timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp)) as mosquitto:
        settings = CloudSettings(
            data_dir=Path(tmp) / "cloud", api_port=0, mqtt_url=mosquitto.url, chunk_size_bytes=chunk_size,
            artifact_fanout=fanout,
        )  # fmt: skip
        with CloudService(settings) as cloud:
            assert cloud.engine is not None and cloud.store is not None and cloud.deployer is not None
            config = TrainingConfig(model_id=MODEL_ID, estimator="mlp", params={"hidden_layer_sizes": (hidden,)})
            release = run_training_pipeline(cloud.engine, cloud.store, cloud.signer, config)
            with cloud.session() as session:
                mv = registry.get_model_version(session, MODEL_ID, release.version)
                artifact_bytes = max(a.size_bytes for a in registry.artifacts_of(session, mv.id or 0))
            ids = [f"fan-{i:04d}" for i in range(devices)]
            with Session(cloud.engine) as session:
                passwords = {d: enroll_device(session, d).password for d in ids}
                session.commit()
            meter = Meter(cloud.transport)
            fleet = SimulatedFleet(
                ids, mqtt_url=mosquitto.url, trust_path=cloud.trust_chain_path, state_root=Path(tmp) / "devices",
                passwords=passwords, mqtt_protocol="5",
            )  # fmt: skip
            with fleet:
                meter.on = True
                start = time.monotonic()
                cloud.deployer.deploy(DeploymentCreate(model_id=MODEL_ID, version=release.version, device_ids=ids))

                def active(s: pb.ReportedState) -> bool:
                    return s.update_state == pb.UPDATE_STATE_ACTIVE and s.active_model.version == release.version

                missing = fleet.wait_all(active, timeout_s)
                rollout_s = time.monotonic() - start
                time.sleep(1.0)  # late answers to requests still in flight count too
                meter.on = False
            status = cloud.status()
    updated = devices - len(missing)
    total = sum(meter.bytes.values())
    return {
        "devices": devices, "mode": "fanout" if fanout else "per_device", "updated": updated,
        "rollout_s": round(rollout_s, 2), "chunk_size": chunk_size, "artifact_bytes": artifact_bytes,
        "cloud_bytes": total, "cloud_bytes_per_device": round(total / max(1, updated)),
        "chunk_bytes_per_device": round((meter.bytes["fanout"] + meter.bytes["per_device_chunks"]) / max(1, updated)),
        "bytes": dict(meter.bytes), "messages": dict(meter.messages),
        "chunk_server": status["chunks"], "fanout": status["fanout"],
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="20,100", help="fleet sizes, comma-separated (each <= ~140)")
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=1024, help="MLP hidden units (1024: an ~80 KB INT8 artifact)")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    records = []
    for devices in (int(n) for n in args.devices.split(",")):
        for fanout in (False, True):
            with contextlib.suppress(KeyboardInterrupt):
                records.append(run(devices, fanout, args.chunk_size, args.hidden, args.timeout))
            print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    ratios = {}
    for devices in {r["devices"] for r in records}:
        pair = {r["mode"]: r for r in records if r["devices"] == devices}
        if len(pair) == 2 and pair["fanout"]["cloud_bytes"]:
            ratios[str(devices)] = round(pair["per_device"]["cloud_bytes"] / pair["fanout"]["cloud_bytes"], 2)
    print(json.dumps({"records": records, "ratios_per_device_over_fanout": ratios}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
