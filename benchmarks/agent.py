"""The agent on a small board: idle memory, threads, start to first answer, predict overhead and the size of
a telemetry window, each side by side with the bare runtime in one run.

    .venv/bin/python benchmarks/agent.py [--seconds 1.5] [--rounds 7]

The model is sklearn's digits MLP (64 features, 10 classes) compiled by model_compiler to ONNX and TFLite and
installed through the real update path. Memory, threads and start-up are measured in a child process per
configuration (this file run with --child: it imports the agent only, never cloud or model_compiler):
    bare    the runtime alone with the model loaded (import + load_model)
    stock   the agent as it was: runtime defaults (spinning thread pools, memory arena), grpcio with 4 workers,
            pydantic-settings and cryptography imported at start, glibc's default malloc arenas
    lean    the agent as it is now, made as `edgefleet-agent run` makes it (edge_agent defaults, runtimes probed
            and cached, malloc arenas capped)
and, to price each change on its own, the lean agent with that one change undone:
    +pydantic   pydantic-settings imported (what the old settings class loaded)
    +crypto     cryptography's Ed25519 imported at start, as checking the trust chain and the retained desired
                state at every start did (now checked once per content, edge_agent.config / update.handlers)
    +openssl    hashlib on OpenSSL's libcrypto (edge_agent.resources.use_builtin_hashes undone; a device on
                mqtts:// loads libcrypto for ssl anyway, and saves ~0.5 MB of this only)
    +arenas     glibc's default malloc arenas (no MALLOC_ARENA_MAX / mallopt)
    +grpcio     the local gRPC API served by grpcio (4 workers) instead of grpclib
    +runtime    the runtime's own defaults (RuntimeTuning.stock())
and the lean agent of a device that needs no local API (nogrpc: grpc_address "", grpc never imported).
A child serves gRPC, talks to a private Mosquitto holding what the cloud keeps retained for it (its
signed desired state, the trust chain: received at every start), and is measured after 2 s idle. first_inference_s runs
from spawning the lean onnxruntime child to its first gRPC Predict answer (the model cached on disk). Packages a
device does not install but this venv has (PySocks, dnspython: paho's optional imports) are hidden from every child.
Predict overhead alternates bare and agent calls one by one (the machine is shared); medians per call.
Prints one JSON object last.
"""

from __future__ import annotations

# The child imports this module too: what only the parent needs (statistics, subprocess, tempfile, which pull
# decimal, fractions, shutil, bz2, lzma) is imported where it is used, so the child holds the agent's modules only.
import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

RUNTIMES = ("onnxruntime", "tflite")
UNDONE = ("+pydantic", "+crypto", "+openssl", "+arenas", "+grpcio", "+runtime")  # one lean change undone each
VARIANTS = ("bare", "stock", "lean", *UNDONE, "nogrpc")  # nogrpc: lean without the local gRPC API (grpc_address "")


# ------------------------------------------------------------------------------------- the child (agent only)


NOT_ON_A_DEVICE = ("socks", "dns")  # paho's optional PySocks and dnspython: here for the cloud's packages only


def child(args: argparse.Namespace) -> int:
    from functools import partial

    # as on a device, which installs the agent extra alone: with PySocks, paho looks up proxies through
    # urllib.request on every connect, and it imports dnspython whenever it is there
    sys.modules.update(dict.fromkeys(NOT_ON_A_DEVICE))

    from edge_agent.resources import limit_malloc_arenas, use_builtin_hashes

    undone = set(UNDONE) if args.variant == "stock" else {args.variant}
    if "+openssl" not in undone and args.variant != "bare":
        use_builtin_hashes()  # as `edgefleet-agent run` does, before anything imports hashlib
    if "+arenas" not in undone and args.variant != "bare":
        limit_malloc_arenas()
    if "+pydantic" in undone:
        import pydantic_settings  # noqa: F401
    if "+crypto" in undone:
        import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401

    from edge_agent.serving import runtime
    from protocols.v1 import messages_pb2 as pb

    tuning = runtime.RuntimeTuning.stock() if "+runtime" in undone else runtime.RuntimeTuning()
    if args.variant == "bare":
        manifest = pb.Manifest.FromString(Path(args.manifest).read_bytes())
        artifact = next(a for a in manifest.artifacts if runtime.runtime_for(a) == args.runtime)
        model = runtime.load_model(artifact, Path(args.artifact).read_bytes(), manifest.io)
        model.predict([[0.0] * model.n_features])
        print("ready", flush=True)
        sys.stdin.read()  # until the parent closes it
        return 0
    from edge_agent.agent import Agent
    from edge_agent.config import load_settings
    from edge_agent.connect import transport_for

    settings = load_settings(
        device_id=args.device, mqtt_url=args.mqtt, trust_path=args.trust, state_dir=args.state,
        grpc_address=args.grpc, telemetry_interval_s=3600, runtime_preference=[args.runtime],
    )  # fmt: skip
    # as `edgefleet-agent run` makes it: the runtimes that import here (probed once in a child, then cached in
    # the state dir) and the real loader; only +runtime plugs a loader in, with the runtime's own defaults
    plugged = partial(runtime.load_model, tuning=tuning) if "+runtime" in undone else None
    agent = Agent(settings, transport_for(settings), load_model=plugged)
    agent.start()
    if args.variant == "nogrpc":
        agent.wait_for(lambda s: s.HasField("active_model"), 30)
        print("ready", flush=True)
        sys.stdin.read()
        agent.stop()
        return 0
    from edge_agent.serving.grpc_server import start_grpc_server

    server = (start_grpcio_server if "+grpcio" in undone else start_grpc_server)(agent, settings.grpc_address)
    print(f"ready {server.port}", flush=True)
    sys.stdin.read()
    server.stop()
    agent.stop()
    return 0


def start_grpcio_server(agent: Any, address: str) -> Any:
    """The local API as the agent served it before (grpcio, a pool of 4 workers), same handlers."""
    from concurrent import futures
    from types import SimpleNamespace

    import grpc

    from edge_agent.serving import grpc_server
    from protocols.v1 import agent_pb2_grpc

    class Service(agent_pb2_grpc.EdgeInferenceServicer):
        def Predict(self, request: Any, context: Any) -> Any:
            try:
                return grpc_server.predict(agent, request)
            except grpc_server.CallError as exc:
                context.abort(grpc.StatusCode[exc.status.name], exc.message)

        def Status(self, request: Any, context: Any) -> Any:
            return grpc_server.status(agent, request)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)])
    agent_pb2_grpc.add_EdgeInferenceServicer_to_server(Service(), server)
    port = server.add_insecure_port(address)
    server.start()
    return SimpleNamespace(port=port, stop=lambda: server.stop(1).wait(2))


# ------------------------------------------------------------------------------------- the parent


def proc_status(pid: int) -> tuple[float, int]:
    text = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"Threads:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    return rss_kb / 1024, threads


def first_answer(port: int, n_features: int, deadline: float) -> None:
    import grpc

    from protocols.v1 import agent_pb2, agent_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = agent_pb2_grpc.EdgeInferenceStub(channel)
        while True:
            try:
                stub.Predict(agent_pb2.PredictRequest(values=[0.0] * n_features, rows=1), timeout=1)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)


def measure_child(variant: str, rt: str, paths: dict[str, Any], n_features: int) -> dict[str, Any]:
    import subprocess

    from support.net import free_port

    port = free_port()
    command = [sys.executable, __file__, "--child", "--variant", variant, "--runtime", rt, "--device", f"bench-{rt}",
               "--mqtt", paths["mqtt"], "--trust", str(paths["trust"]), "--state", str(paths[rt]),
               "--grpc", f"127.0.0.1:{port}", "--manifest", str(paths["manifest"]),
               "--artifact", str(paths[f"{rt}_bytes"])]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MALLOC_ARENA_MAX")}
    spawned = time.monotonic()
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT)  # noqa: S603
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().split()
        if not line or line[0] != "ready":
            raise SystemExit(f"child {variant}/{rt} did not start")
        result: dict[str, Any] = {}
        if variant not in ("bare", "nogrpc"):
            first_answer(int(line[1]), n_features, spawned + 30)
            result["first_inference_s"] = round(time.monotonic() - spawned, 3)
        time.sleep(2.0)
        rss_mb, threads = proc_status(proc.pid)
        return {**result, "rss_mb": round(rss_mb, 1), "threads": threads}
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def build(tmp: Path) -> tuple[Any, Any, Any, dict[str, Any]]:
    """The digits MLP compiled for both runtimes, installed (cached) in one state dir per runtime."""
    import hashlib

    from support.fake_cloud import FakeCloud
    from support.releases import Release, make_keys

    from cloud.training.pipeline import build_estimator, load_dataset
    from edge_agent.agent import Agent
    from edge_agent.config import load_settings
    from edge_agent.messages import AGENT_VERSION, offline_will
    from edge_agent.serving.probe import probe_runtimes
    from edge_agent.serving.runtime import runtime_for
    from edge_agent.transport import MemoryBroker, MemoryTransport
    from model_compiler.compiler import compile_estimator
    from protocols.v1 import messages_pb2 as pb

    split = load_dataset("digits", test_size=0.3, seed=0)
    estimator = build_estimator("mlp", {}, 0).fit(split.X_train, split.y_train)
    compiled = compile_estimator(estimator, split.X_test, split.y_test, target="all", quantize="none")
    keys = make_keys(tmp / "keys")
    manifest = pb.Manifest()
    manifest.CopyFrom(compiled.fragment)
    manifest.model_id, manifest.version, manifest.sequence = "digits", "1", 1
    manifest.created_at_ms = int(time.time() * 1000)
    release = Release.of(keys.signer.sign(manifest), [b.data for b in compiled.artifacts], keys)
    paths: dict[str, Any] = {"trust": keys.trust_path, "manifest": tmp / "manifest.pb"}
    paths["manifest"].write_bytes(manifest.SerializeToString())
    for built in compiled.artifacts:
        rt = runtime_for(built.artifact)
        paths[f"{rt}_bytes"] = tmp / built.artifact.name
        paths[f"{rt}_bytes"].write_bytes(built.data)
        assert hashlib.sha256(built.data).hexdigest() == built.artifact.sha256
    broker = MemoryBroker()
    cloud = FakeCloud.in_memory(broker, chunk_size=64 * 1024)
    for rt in RUNTIMES:
        paths[rt] = tmp / f"state-{rt}"
        settings = load_settings(device_id=f"bench-{rt}", state_dir=paths[rt], trust_path=keys.trust_path,
                                 grpc_address="", telemetry_interval_s=3600, runtime_preference=[rt])  # fmt: skip
        agent = Agent(settings, MemoryTransport(broker, will=offline_will(settings.device_id, fleet=keys.fleet)),
                      runtimes=[rt], tick_interval_s=0.05)  # fmt: skip
        agent.start()
        cloud.deploy(settings.device_id, release, generation=1)
        ok = agent.wait_for(lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE, 60)
        agent.stop()
        if not ok:
            raise SystemExit(f"install on {rt} did not finish: {agent.status()}")
        probe_runtimes(paths[rt], AGENT_VERSION)  # cached in the state dir, as after a device's first start
    cloud.transport.stop()
    return split, manifest, broker, paths


def retain_like_the_cloud(memory_broker: Any, url: str) -> None:
    """What the cloud keeps retained for each device (its desired state, the fleet's trust chain), put on
    the real broker: every child receives it on connect, as an agent in the field does at each start."""
    from urllib.parse import urlsplit

    from paho.mqtt import client, publish

    parts = urlsplit(url)
    retained = [(topic, payload, 1, True) for topic, payload in memory_broker._retained.items()]
    publish.multiple(retained, hostname=parts.hostname, port=parts.port or 1883, protocol=client.MQTTv311)


def bench_agent(paths: dict[str, Any]) -> tuple[Any, Any]:
    """The two sides of the predict overhead (here and in benchmarks/agent_predict.py): the onnxruntime agent,
    started on its cached model (in-memory broker, no gRPC), and the bare runtime with the same model loaded.
    The caller stops the agent. Only the agent's public API, so it runs against other revisions too."""
    from edge_agent.agent import Agent
    from edge_agent.config import load_settings
    from edge_agent.serving.runtime import load_model
    from edge_agent.transport import MemoryBroker, MemoryTransport
    from protocols.v1 import messages_pb2 as pb

    settings = load_settings(device_id="bench-onnxruntime", state_dir=paths["onnxruntime"], trust_path=paths["trust"],
                             grpc_address="", telemetry_interval_s=3600)  # fmt: skip
    agent = Agent(settings, MemoryTransport(MemoryBroker()), runtimes=["onnxruntime"])
    agent.start()
    manifest = pb.Manifest.FromString(Path(paths["manifest"]).read_bytes())
    artifact = next(a for a in manifest.artifacts if a.runtime == "onnxruntime")
    return agent, load_model(artifact, Path(paths["onnxruntime_bytes"]).read_bytes(), manifest.io)


def overhead(paths: dict[str, Any], x_test: Any, seconds: float, rounds: int) -> dict[str, Any]:
    """Median agent / bare runtime time per call at batch 1 and 64, interleaved in rounds; and the window."""
    import statistics

    import numpy as np

    agent, bare = bench_agent(paths)
    try:
        x = np.asarray(x_test, dtype=np.float32)
        out: dict[str, Any] = {}
        for rows in (1, 64):
            batches = [x[i : i + rows] for i in range(0, len(x) - rows, rows)][:64]

            bare_us, agent_us = [], []  # call by call, alternating: both see the same neighbours' load
            for _ in range(rounds):
                deadline = time.perf_counter() + seconds
                while time.perf_counter() < deadline:
                    batch = batches[len(bare_us) % len(batches)]
                    t0 = time.perf_counter()
                    bare.predict(batch)
                    t1 = time.perf_counter()
                    agent.predict(batch)
                    agent_us.append((time.perf_counter() - t1) * 1e6)
                    bare_us.append((t1 - t0) * 1e6)
            b, a = statistics.median(bare_us), statistics.median(agent_us)
            out[f"b{rows}"] = {"bare_us": round(b, 1), "agent_us": round(a, 1), "ratio": round(a / b, 3)}
            print(f"batch {rows}: bare {b:.1f} µs, agent {a:.1f} µs, x{a / b:.3f}", file=sys.stderr)
        window = agent.flush_telemetry()
        assert window is not None and len(window.features) + len(window.feature_counts_implied) > 0
        out["window"] = {"bytes": window.ByteSize(), "inferences": window.inference_count,
                         "legacy_bytes": legacy_size(window)}  # fmt: skip
        return out
    finally:
        agent.stop()


def legacy_size(window: Any) -> int:
    """The same window in the old encoding (every bin of every feature, the latency bounds spelled out)."""
    from cloud.monitoring.ingest import telemetry_row
    from protocols.v1 import messages_pb2 as pb

    row = telemetry_row(window.device_id, window, 0)
    old = pb.TelemetryWindow()
    old.CopyFrom(window)
    old.ClearField("feature_counts")
    old.ClearField("feature_counts_implied")
    old.ClearField("latency_bins")
    old.latency_us.bounds.extend(row["latency_histogram"]["bounds"])
    old.latency_us.counts.extend(row["latency_histogram"]["counts"])
    for index, counts in row["feature_counts"].items():
        old.features.add(index=int(index), counts=counts)
    return old.ByteSize()


def main() -> int:
    from edge_agent.cli import HelpFormatter  # argparse's own imports shutil, bz2, lzma: the agent's CLI does not

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.5, help="per round, bare and agent together")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("variant", "runtime", "device", "mqtt", "trust", "state", "grpc", "manifest", "artifact"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    import tempfile

    sys.path.insert(1, str(ROOT / "tests"))
    from support.mosquitto import MosquittoBroker

    results: dict[str, Any] = {"memory": {}}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        split, manifest, memory_broker, paths = build(tmp)
        n_features = manifest.io.n_features
        with MosquittoBroker(tmp / "mosquitto") as broker:
            paths["mqtt"] = broker.url
            retain_like_the_cloud(memory_broker, broker.url)
            for rt in RUNTIMES:
                for variant in VARIANTS:
                    figures = measure_child(variant, rt, paths, n_features)
                    results["memory"][f"{rt}_{variant}"] = figures
                    print(f"{rt:<12} {variant:<6} {figures}", file=sys.stderr)
        serving = overhead(paths, split.X_test, args.seconds, args.rounds)
    memory = results["memory"]
    results["serving"] = serving
    # what each lean change saves: lean with it undone minus lean, MB resident, per runtime (same run)
    results["rss_saved_mb"] = {
        rt: {undo: round(memory[f"{rt}_{undo}"]["rss_mb"] - memory[f"{rt}_lean"]["rss_mb"], 1) for undo in UNDONE}
        for rt in RUNTIMES
    }
    for rt in RUNTIMES:
        print(f"{rt:<12} saved by each change (MB): {results['rss_saved_mb'][rt]}", file=sys.stderr)
    results.update(
        rss_mb_onnxruntime=memory["onnxruntime_lean"]["rss_mb"],
        rss_mb_litert=memory["tflite_lean"]["rss_mb"],
        rss_mb_onnxruntime_no_grpc=memory["onnxruntime_nogrpc"]["rss_mb"],
        rss_mb_litert_no_grpc=memory["tflite_nogrpc"]["rss_mb"],
        threads_onnxruntime=memory["onnxruntime_lean"]["threads"],
        predict_overhead_b1=serving["b1"]["ratio"],
        predict_overhead_b64=serving["b64"]["ratio"],
        first_inference_s=memory["onnxruntime_lean"]["first_inference_s"],
        telemetry_window_bytes=serving["window"]["bytes"],
    )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    # here, not at import: benchmarks/agent_predict.py's child imports bench_agent from this file and must keep
    # the agent code of the tree it was pointed at (PYTHONPATH), which may be another revision's
    sys.path[:0] = [str(ROOT)]
    sys.exit(main())
