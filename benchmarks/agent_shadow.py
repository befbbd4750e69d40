"""What probation shadowing costs an answer: the agent's predict with the previous model let go at
activation (probation_s 0), and on probation shadowing 10 % and 100 % of the calls, side by side.

    .venv/bin/python benchmarks/agent_shadow.py [--trees 60] [--seconds 2]

Both models are RandomForests converted with skl2onnx, run by the real onnxruntime, installed through the
real update path over the in-memory broker. The shadow runs on its own thread: the answer never waits for
it, but it competes for the CPU. Prints one JSON object last: median and p95 µs per call, and the shadow
figures (compared, agreed, dropped) of each run.
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
from support.fake_cloud import FakeCloud  # noqa: E402
from support.releases import Release, make_keys  # noqa: E402

from edge_agent.agent import Agent  # noqa: E402
from edge_agent.config import load_settings  # noqa: E402
from edge_agent.messages import offline_will  # noqa: E402
from edge_agent.transport import MemoryBroker, MemoryTransport  # noqa: E402
from protocols.signing import Signer  # noqa: E402
from protocols.v1 import messages_pb2 as pb  # noqa: E402

N_FEATURES = 8
RUNS = {"no_probation": (0.0, 0.0), "shadow_10pct": (600.0, 0.1), "shadow_100pct": (600.0, 1.0)}


def release(signer: Signer, trees: int, seed: int, version: str) -> Release:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, N_FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.3 * x[:, 1] * seed > 0).astype(np.int64)
    model = RandomForestClassifier(n_estimators=trees, max_depth=8, random_state=seed).fit(x, y)
    data = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17).SerializeToString()
    manifest = pb.Manifest(
        model_id="rf", version=version, sequence=seed, created_at_ms=int(time.time() * 1000),
        io=pb.IoSchema(inputs=[pb.TensorSpec(name="X", dtype="float32", shape=[-1, N_FEATURES])],
                       task=pb.TASK_CLASSIFICATION, class_labels=["0", "1"], n_features=N_FEATURES),
    )  # fmt: skip
    manifest.artifacts.add(
        name="model.onnx", format=pb.ARTIFACT_FORMAT_ONNX, sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data), runtime="onnxruntime", predicted_output="label", scores_output="probabilities",
    )  # fmt: skip
    for row, label in zip(x[:5], model.predict(x[:5]), strict=True):
        manifest.self_test.vectors.add(input=row.tolist(), expected_label=str(label))
    manifest.self_test.min_label_agreement = 1.0
    return Release.of(signer.sign(manifest), [data], getattr(signer, "keys", None))


def run(tmp: Path, name: str, probation_s: float, shadow_rate: float, v1: Release, v2: Release, seconds: float) -> Any:
    keys = v1.keys
    assert keys is not None
    broker = MemoryBroker()
    cloud = FakeCloud.in_memory(broker, chunk_size=64 * 1024)
    settings = load_settings(
        device_id=name, state_dir=tmp / name, trust_path=keys.trust_path, grpc_address="",
        telemetry_interval_s=3600, sample_rate=0.0, probation_s=probation_s, shadow_rate=shadow_rate,
    )  # fmt: skip
    agent = Agent(settings, MemoryTransport(broker, will=offline_will(name, fleet=keys.fleet)), tick_interval_s=0.05)
    agent.start()
    try:
        for generation, rel in ((1, v1), (2, v2)):
            cloud.deploy(name, rel, generation=generation)
            if not agent.wait_for(lambda s, g=generation: s.update_state == pb.UPDATE_STATE_ACTIVE
                                  and s.desired_generation == g, 60):  # fmt: skip
                raise SystemExit(f"update did not finish: {agent.status()}")
        rows = np.random.default_rng(3).normal(size=(1024, 1, N_FEATURES)).astype(np.float32)
        samples: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            row = rows[len(samples) % len(rows)]
            t0 = time.perf_counter()
            agent.predict(row)
            samples.append((time.perf_counter() - t0) * 1e6)
        time.sleep(0.5)  # let the shadow finish what it queued
        window = agent.flush_telemetry()
        assert window is not None
        samples.sort()
        return {
            "calls": len(samples),
            "median_us": round(statistics.median(samples), 1),
            "p95_us": round(samples[int(0.95 * len(samples))], 1),
            "shadow": {"compared": window.shadow_compared, "agreed": window.shadow_agreed,
                       "dropped": window.shadow_dropped},  # fmt: skip
        }
    finally:
        agent.stop()
        cloud.transport.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        keys = make_keys(tmp / "keys")
        v1, v2 = release(keys.signer, args.trees, 1, "1"), release(keys.signer, args.trees, 2, "2")
        for name, (probation_s, rate) in RUNS.items():
            results[name] = run(tmp, name, probation_s, rate, v1, v2, args.seconds)
            print(f"{name}: {results[name]}", file=sys.stderr)
    base = results["no_probation"]["median_us"]
    results["ratios"] = {f"{name}_vs_no_probation_median": round(r["median_us"] / base, 2)
                         for name, r in results.items() if name != "no_probation"}  # fmt: skip
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
