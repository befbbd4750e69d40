"""`edgefleet demo`: the whole loop on one machine, on embedded defaults, with simulated devices.

train -> evaluate -> compile (INT8 ONNX) -> sign -> register with lineage -> start broker + cloud ->
start N devices running the real agent -> deploy over MQTT -> devices verify, fetch in chunks, self-test,
activate -> infer on rows set apart for them (drift injected on every other device) -> telemetry and samples back ->
labels back through the feedback API -> summary -> then the loop closes (`demo_loop`): the drift alert
triggers a retrain, the challenger beats the champion on field data, goes out as a gated canary, and the
drifted devices' accuracy recovers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ACTIVATION_TIMEOUT_S = 90.0
INGEST_TIMEOUT_S = 30.0
DRIFTED_FEATURES = 6
SAMPLE_RATE = 0.5  # of inferences sampled back to the cloud (a real fleet samples far fewer)
# the digits' 1,797 rows: 45 % to train on, 25 % held out for evaluation, 30 % (540) for the devices to draw from
TEST_SIZE, POOL_SIZE = 0.25, 0.3


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="run the whole loop end to end with simulated devices")
    demo.add_argument("--devices", type=int, default=5, help="number of simulated devices (default 5)")
    demo.add_argument("--data-dir", type=Path, help="where to keep the demo's data (default: a new temp dir)")
    demo.add_argument("--mqtt-url", help="use this broker instead of the embedded one")
    demo.add_argument("--database-url", help="use this database instead of SQLite")
    demo.add_argument("--inferences", type=int, default=200, help="inferences per device (default 200)")
    demo.add_argument("--estimator", default="logreg", choices=["logreg", "mlp"], help="model to train")
    demo.add_argument("--drift", type=float, default=3.0,
                      help="shift (in std units) injected into a few features on half the devices")
    demo.add_argument("--no-retrain", dest="retrain", action="store_false",
                      help="stop after the drift summary (no labels-back, retrain and canary)")
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    # imported here, not above: every `edgefleet` command imports this module to register `demo`
    import numpy as np
    from rich.console import Console

    from cloud.cli.demo_loop import LoopSetup, close_the_loop, send_labels, settle
    from cloud.cli.demo_report import DemoFacts, render_summary
    from cloud.db.tables import DeploymentCreate
    from cloud.errors import CloudError
    from cloud.identity.enrollment import enroll_device
    from cloud.identity.tokens import create_token
    from cloud.service import CloudService
    from cloud.settings import CloudSettings
    from cloud.training.pipeline import TrainingConfig, run_training_pipeline
    from protocols.v1 import messages_pb2 as pb
    from simulator.data import Drift
    from simulator.host import AgentHost, DeviceSpec
    from simulator.labeller import Annotator, LabelledStream

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # piped output: don't squeeze the tables into 80 columns
    if args.devices < 1:
        console.print("[red]error:[/] --devices must be at least 1")
        return 2
    if args.mqtt_url is None:
        from cloud.mqtt.broker import embedded_broker_limit

        if (too_many := embedded_broker_limit(args.devices)) is not None:
            console.print(f"[yellow]warning:[/] {too_many}", highlight=False, soft_wrap=True)
    data_dir = (args.data_dir or Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))).resolve()
    overrides = {"data_dir": data_dir, "api_port": 0, "mqtt_url": args.mqtt_url, "database_url": args.database_url}
    settings = CloudSettings(**{k: v for k, v in overrides.items() if v is not None})
    console.print(f"EdgeFleet demo: data in [bold]{data_dir}[/]")
    started = time.perf_counter()
    try:
        with CloudService(settings) as cloud:
            assert cloud.engine is not None and cloud.store is not None
            console.print(f"  cloud up: fleet {cloud.fleet}, broker {cloud.mqtt_url}, console API {cloud.api_url}")
            with console.status("pipeline") as status:
                result = run_training_pipeline(
                    cloud.engine, cloud.store, cloud.signer,
                    # the devices draw their rows from a pool that is neither trained nor evaluated on (a retrain
                    # on what they send back has not seen the held-out rows it is judged on); the drift
                    # baseline describes that pool, the population the baseline devices draw from
                    TrainingConfig(estimator=args.estimator, model_id="digits-classifier", test_size=TEST_SIZE,
                                   pool_size=POOL_SIZE, profile_from="pool",
                                   manifest_valid_days=settings.manifest_valid_days,
                                   # the smallest artifact that passes the gate: INT8 when it keeps the
                                   # accuracy, else FP16 or FP32. The retrain reuses this recipe, and a
                                   # challenger fitted on the field's rows lost 0.67 points in INT8 in a CI run
                                   # (allowed 0.5): with "int8" alone the demo ended in a traceback there
                                   quantize="auto"),
                    progress=lambda step: status.update(f"pipeline: {step}"),
                )
            console.print(
                f"  trained, compiled, signed and registered {result.model_id} v{result.version} "
                f"(run {result.run_id[:8]}, steps: "
                + ", ".join(f"{k} {v:.2f}s" for k, v in result.step_timings_s.items()) + ")"
            )
            device_ids = [f"demo-{i:02d}" for i in range(1, args.devices + 1)]
            drifted = set(device_ids[1::2]) if args.drift else set()

            def site(device_id: str) -> dict[str, str]:
                return {"site": "drifted" if device_id in drifted else "baseline"}

            with cloud.session() as session:  # the in-process shortcut for `devices enroll` + `provision --token`
                passwords = {d: enroll_device(session, d, site(d)).password for d in device_ids}
            with AgentHost(  # every device a real agent, all on one event loop, each with its own MQTT link
                [DeviceSpec(d, site(d), passwords[d]) for d in device_ids],
                mqtt_url=cloud.mqtt_url or "",
                trust_path=cloud.trust_chain_path,
                state_root=data_dir / "devices",
                sample_rate=SAMPLE_RATE,
                settings_overrides={"sample_max_per_window": 100_000},
            ) as fleet:
                console.print(f"  {len(device_ids)} devices enrolled and started (simulated, real edge_agent code)")
                deployment = cloud.deployer.deploy(  # type: ignore[union-attr]
                    DeploymentCreate(model_id=result.model_id, version=result.version, device_ids=device_ids)
                )
                with console.status("devices: verify, fetch in chunks, self-test, activate"):
                    t0 = time.perf_counter()
                    pending = fleet.wait_all(
                        lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE and s.active_model.version == result.version,
                        ACTIVATION_TIMEOUT_S,
                    )
                    rollout_s = time.perf_counter() - t0
                if pending:
                    console.print(f"[red]error:[/] devices never activated the model: {', '.join(pending)}")
                    return 1
                console.print(f"  deployment {deployment.id[:8]}: all devices active in {rollout_s:.1f}s")
                split = result.split
                drift_features = tuple(int(i) for i in np.argsort(-split.X_train.std(axis=0))[:DRIFTED_FEATURES])
                streams = {
                    d: LabelledStream(
                        split.X_pool, split.y_pool, seed=i,
                        drift=Drift(drift_features, shift=args.drift) if d in drifted else Drift(),
                    )
                    for i, d in enumerate(device_ids)
                }
                fleet.attach_streams(streams)  # type: ignore[arg-type]
                with cloud.session() as session:
                    _, token = create_token(session, name="demo-labeller", role="deployer", created_by="demo")
                setup = LoopSetup(cloud, fleet, Annotator(streams), token, result.model_id, device_ids, drifted,
                                  args.inferences, {})  # fmt: skip
                with console.status(f"devices: {args.inferences} inferences each (the truth unknown to them)"):
                    runs = fleet.run_inference(args.inferences, labelled=False)
                    fleet.flush_telemetry()
                setup.expected.update({r.device_id: r.inferences for r in runs})
                with console.status("cloud: ingesting telemetry and samples"):
                    missing = settle(setup, INGEST_TIMEOUT_S)
                if missing:
                    console.print(f"[red]error:[/] telemetry never arrived from: {', '.join(missing)}")
                    return 1
                labels = send_labels(setup)
                console.print(f"  {labels} sampled predictions labelled later by the simulator's annotator, sent "
                              f"back through POST /api/v1/feedback")  # fmt: skip
                facts = DemoFacts(
                    result=result, deployment_id=deployment.id, device_ids=device_ids, drifted=drifted,
                    drift_features=drift_features, drift_shift=args.drift, runs=runs, rollout_s=rollout_s,
                    data_dir=data_dir, elapsed_s=time.perf_counter() - started,
                )
                with cloud.session() as session:
                    render_summary(console, session, facts)
                if args.retrain and drifted:
                    closed = close_the_loop(console, setup, result.version, settings.manifest_valid_days)
                    if closed.get("rollout_state") not in (None, "completed"):
                        return 1  # a challenger that loses is an answer; a canary that never completes is not
    except CloudError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    console.print(f"done in {time.perf_counter() - started:.1f}s; data kept in [bold]{data_dir}[/]")
    return 0


def wait_for_telemetry(cloud: object, expected: dict[str, int], timeout_s: float) -> list[str]:
    """Poll the metadata store until each device's ingested inference count reaches what it ran."""
    from cloud import monitoring

    deadline = time.monotonic() + timeout_s
    missing = list(expected)
    while missing and time.monotonic() < deadline:
        with cloud.session() as session:  # type: ignore[attr-defined]
            missing = [
                d for d, n in expected.items() if monitoring.telemetry_summary(session, d).inference_count < n
            ]
        if missing:
            time.sleep(0.2)
    return missing


