"""The demo's closing summary: what a person reads to see the loop worked, from what the cloud ingested."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from sqlmodel import Session

from cloud import fleet, monitoring, registry
from cloud.cli.tables import compact_table
from cloud.monitoring import feedback
from cloud.training.pipeline import PipelineResult
from simulator.devices import DeviceRun

HASH_KEYS = ("dataset_hash", "parameters_sha256", "run_id")


@dataclass
class DemoFacts:
    result: PipelineResult
    deployment_id: str
    device_ids: list[str]
    drifted: set[str]
    drift_features: tuple[int, ...]
    drift_shift: float
    runs: list[DeviceRun]
    rollout_s: float
    data_dir: Path
    elapsed_s: float
    notes: list[str] = field(default_factory=list)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_summary(console: Console, session: Session, facts: DemoFacts) -> dict[str, object]:
    """Print the model, device and drift tables; return the same figures as a dict (for tests/scripts)."""
    result = facts.result
    mv = registry.get_model_version(session, result.model_id, result.version)
    manifest = registry.manifest_of(mv)
    model = compact_table(f"Model {result.model_id} v{result.version} (sequence {result.sequence})")
    for column in ("artifact", "runtime", "quantization", "size", "accuracy", "agreement"):
        model.add_column(column, no_wrap=True)
    for artifact in manifest.artifacts:
        model.add_row(
            artifact.name, artifact.runtime, artifact.quantization, f"{artifact.size_bytes / 1024:.1f} KiB",
            _fmt(artifact.metrics.get("accuracy"), ".3f"), _fmt(artifact.metrics.get("agreement"), ".3f"),
        )
    console.print(model)
    lineage = ", ".join(f"{k}={v[:12] if k in HASH_KEYS else v}" for k, v in sorted(manifest.lineage.items()))
    console.print(f"scikit-learn accuracy {result.metrics['accuracy']:.3f}; lineage: {lineage}")

    # short titles, and the version alone (the model is in the table above): ten columns in 80
    devices = compact_table(f"Devices running {result.model_id} (as reported to and ingested by the cloud)")
    for column in ("device", "site", "version", "state", "infer", "err", "p50µs", "p95µs", "acc", "PSI max"):
        devices.add_column(column, justify="right" if column not in ("device", "site", "version", "state") else "left",
                           no_wrap=True)
    rows: dict[str, dict[str, object]] = {}
    psi_by_device: dict[str, dict[int, float]] = {}
    # accuracy from the labels that came back (the devices infer without knowing the truth), else telemetry's
    lines = feedback.field_accuracy(session, result.model_id, result.version, by="device")
    labelled = {x.key: x.accuracy for x in lines}
    for device_id in facts.device_ids:
        device = fleet.get_device(session, device_id)
        summary = monitoring.telemetry_summary(session, device_id)
        report = monitoring.device_drift(session, device_id, model_id=result.model_id, version=result.version)
        ranked = sorted((f for f in report.features if f.psi is not None), key=lambda f: -(f.psi or 0.0))
        top = ranked[:1]
        rows[device_id] = {
            "state": device.update_state, "version": device.active_version,
            "inferences": summary.inference_count, "accuracy": labelled.get(device_id, summary.accuracy),
            "p50_us": summary.latency_p50_us, "p95_us": summary.latency_p95_us,
        }
        psi_by_device[device_id] = {f.index: f.psi for f in report.features if f.psi is not None}
        devices.add_row(
            device_id, device.labels.get("site", ""), device.active_version or "-",
            device.update_state, str(summary.inference_count), str(summary.error_count),
            _fmt(summary.latency_p50_us, ".0f"), _fmt(summary.latency_p95_us, ".0f"),
            _fmt(labelled.get(device_id, summary.accuracy), ".3f"),
            f"{top[0].psi:.2f} (f{top[0].index})" if top else "-",
        )
    console.print(devices)

    fleet_report = monitoring.fleet_drift(session, result.model_id, result.version)
    drift = compact_table("Feature drift, PSI (* = drifted)")
    drift.add_column("feature")
    drift.add_column("fleet", justify="right")
    for device_id in facts.device_ids:
        drift.add_column(device_id, justify="right")
    shown = sorted(
        {f.index for f in fleet_report.features if f.psi is not None and (f.drifted or f.index in facts.drift_features)}
        | set(facts.drift_features)
    )
    fleet_by_index = {f.index: f for f in fleet_report.features}
    for index in shown:
        f = fleet_by_index[index]
        cells = [_fmt(f.psi, ".2f") + ("*" if f.drifted else "")]
        for device_id in facts.device_ids:
            cells.append(_fmt(psi_by_device[device_id].get(index), ".2f"))
        drift.add_row(f.name or f"f{index}", *cells)
    console.print(drift)
    if facts.drifted:
        console.print(
            f"drift injected: features {', '.join(f'f{i}' for i in facts.drift_features)} shifted by "
            f"{facts.drift_shift} std on {', '.join(sorted(facts.drifted))}"
        )
    console.print(f"rollout to {len(facts.device_ids)} devices took {facts.rollout_s:.1f}s")
    return {
        "devices": rows,
        "psi": psi_by_device,
        "fleet_drifted": [f.index for f in fleet_report.features if f.drifted],
    }
