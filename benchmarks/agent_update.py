"""The device agent, measured: how long an update takes over a real Mosquitto by chunk window, and what
serving through the agent (telemetry, sampling, atomic slot) costs over calling the runtime directly.

    .venv/bin/python benchmarks/agent_update.py [--trees 60] [--repeats 3] [--chunk-kib 64]

The model is a RandomForest converted with skl2onnx (about 1 MB), loaded by the real onnxruntime and
self-tested, exactly as on a device. Prints one JSON object last; ratios compare each chunk window with
window 1, and the agent's predict with the bare runtime's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from support.fake_cloud import CHUNK_REQUESTS, FakeCloud  # noqa: E402
from support.mosquitto import MosquittoBroker  # noqa: E402
from support.releases import Release, make_keys  # noqa: E402

from edge_agent.agent import Agent  # noqa: E402
from edge_agent.config import load_settings  # noqa: E402
from edge_agent.connect import transport_for  # noqa: E402
from edge_agent.paho_transport import PahoTransport  # noqa: E402
from edge_agent.serving.runtime import load_model  # noqa: E402
from protocols.signing import Signer  # noqa: E402
from protocols.v1 import messages_pb2 as pb  # noqa: E402

WINDOWS = (1, 4, 16)
N_FEATURES = 8


def build_model(trees: int) -> tuple[bytes, Any, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, N_FEATURES)).astype(np.float32)
    y = ((x[:, 0] * x[:, 1] + x[:, 2]) > 0).astype(np.int64)
    model = RandomForestClassifier(n_estimators=trees, max_depth=12, random_state=0).fit(x, y)
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    return onx.SerializeToString(), model, x


def signed_manifest(signer: Signer, data: bytes, model: Any, x: np.ndarray, sequence: int) -> pb.SignedManifest:
    manifest = pb.Manifest(
        model_id="rf",
        version=str(sequence),
        sequence=sequence,
        io=pb.IoSchema(task=pb.TASK_CLASSIFICATION, class_labels=["0", "1"], n_features=N_FEATURES),
    )
    manifest.artifacts.add(
        name="model.onnx",
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        runtime="onnxruntime",
        predicted_output="label",
        scores_output="probabilities",
    )
    for row, label in zip(x[:16], model.predict(x[:16]), strict=True):
        manifest.self_test.vectors.add(input=row.tolist(), expected_label=str(label))
    for i in range(N_FEATURES):  # a drift profile as the compiler embeds it: 10 bins per feature
        edges = np.quantile(x[:, i], np.linspace(0, 1, 11)).tolist()
        manifest.reference.features.add(index=i, bin_edges=edges, counts=[len(x) // 10] * 10)
    manifest.reference.predictions.labels.extend(["0", "1"])
    return signer.sign(manifest)


def _chunk_cloud(url: str, chunk_size: int) -> FakeCloud:
    """The tests' fake cloud over a real MQTT client, answering chunk requests only."""
    transport = PahoTransport(url, "bench-cloud")
    cloud = FakeCloud(transport, chunk_size=chunk_size, topic_filter=CHUNK_REQUESTS)
    if not transport.wait_connected(10):
        raise SystemExit("the benchmark cloud could not connect")
    return cloud


def time_update(
    url: str, trust_path: Path, state: Path, window: int, cloud: FakeCloud, release: Release, device_id: str
) -> float:
    settings = load_settings(
        device_id=device_id,
        mqtt_url=url,
        trust_path=trust_path,
        state_dir=state,
        grpc_address="",
        chunk_window=window,
        telemetry_interval_s=3600,
    )
    agent = Agent(settings, transport_for(settings))
    agent.start()
    try:
        if not agent.transport.wait_connected(10):
            raise SystemExit("the agent could not connect")
        started = time.perf_counter()
        cloud.deploy(device_id, release, generation=1)
        if not agent.wait_for(lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE, 120):
            raise SystemExit(f"update did not finish: {agent.status()}")
        return time.perf_counter() - started
    finally:
        agent.stop()


def time_calls(fn: Any, x: np.ndarray, seconds: float = 1.0) -> float:
    """Median µs per call over ~seconds of calls."""
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn(x)
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-kib", type=int, default=64)
    args = parser.parse_args()

    data, model, x = build_model(args.trees)
    results: dict[str, Any] = {"artifact_bytes": len(data), "chunk_bytes": args.chunk_kib * 1024, "updates": []}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        keys = make_keys(tmp / "keys")
        trust_path = keys.trust_path
        signed = signed_manifest(keys.signer, data, model, x, 1)
        release = Release.of(signed, [data], keys)
        with MosquittoBroker(tmp / "mosquitto") as broker:
            cloud = _chunk_cloud(broker.url, args.chunk_kib * 1024)
            try:
                for window in WINDOWS:
                    times = []
                    for run in range(args.repeats):
                        device = f"bench-w{window}-r{run}"
                        times.append(time_update(broker.url, trust_path, tmp / device, window, cloud, release, device))
                    median = statistics.median(times)
                    rate = round(len(data) / median / 1e6, 2)
                    results["updates"].append({"chunk_window": window, "median_s": round(median, 3), "mb_per_s": rate})
                    print(f"window {window:>2}: {median:.3f} s per update", file=sys.stderr)

                settings = load_settings(
                    device_id="bench-serve",
                    mqtt_url=broker.url,
                    trust_path=trust_path,
                    state_dir=tmp / "bench-w1-r0",
                    grpc_address="",
                    telemetry_interval_s=3600,
                    sample_rate=0.01,
                )
                agent = Agent(settings, transport_for(settings))
                agent.start()  # restores the model from the journal of an earlier run of this state dir
                try:
                    bare = load_model(
                        pb.Manifest.FromString(signed.manifest).artifacts[0],
                        data,
                        pb.Manifest.FromString(signed.manifest).io,
                    )
                    serving = {}
                    for rows in (1, 32):
                        batch = x[:rows]
                        raw_us = time_calls(bare.predict, batch)
                        agent_us = time_calls(agent.predict, batch)
                        serving[f"rows_{rows}"] = {"runtime_us": round(raw_us, 1), "agent_us": round(agent_us, 1)}
                    results["serving"] = serving
                finally:
                    agent.stop()
            finally:
                cloud.transport.stop()

    base = results["updates"][0]["median_s"]
    results["ratios"] = {
        **{f"window_{u['chunk_window']}_vs_1_speedup": round(base / u["median_s"], 2) for u in results["updates"]},
        **{f"agent_vs_runtime_{k}": round(v["agent_us"] / v["runtime_us"], 2) for k, v in results["serving"].items()},
    }
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
