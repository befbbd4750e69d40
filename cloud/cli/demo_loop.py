"""The demo's second half: the loop closing. Labels for the sampled predictions come back through the
console API's feedback path; the drift alert triggers a retrain; the challenger is judged against the
champion on held-out reference and field data; the winner goes out as a gated canary through the rollout
controller while the devices keep serving; then the drifted devices' accuracy, from field labels, before
and after, and the aliases move (champion, production: by the rollout controller as the canary completes)
with the reason.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from sqlalchemy import and_
from sqlmodel import Session, col, func, select

from cloud.cli.tables import compact_table
from cloud.db.tables import FeedbackRecord, SampleRecord
from cloud.monitoring import feedback
from cloud.registry import aliases
from cloud.rollout.records import Rollout
from simulator.labeller import Annotator, SampledPrediction

ROLLOUT_TIMEOUT_S = 90.0
ROUND_INFERENCES = 50  # per device per round while the canary is judged
LABEL_BATCH = 5_000


@dataclass
class LoopSetup:
    cloud: Any  # a started CloudService
    fleet: Any  # the AgentHost
    annotator: Annotator
    token: str  # an operator token for the console API (deployer role)
    model_id: str
    device_ids: list[str]
    drifted: set[str]
    inferences: int
    expected: dict[str, int]  # inferences each device has run so far (what telemetry must reach)


def _unlabelled(session: Session, model_id: str) -> list[SampledPrediction]:
    query = (
        select(SampleRecord)
        .join(FeedbackRecord, and_(col(FeedbackRecord.device_id) == col(SampleRecord.device_id),
                                   col(FeedbackRecord.prediction_id) == col(SampleRecord.prediction_id)),
              isouter=True)
        .where(SampleRecord.model_id == model_id, col(FeedbackRecord.id).is_(None))
    )  # fmt: skip
    return [SampledPrediction(s.device_id, s.prediction_id, s.input) for s in session.exec(query)]


def _post(api_url: str, token: str, path: str, body: object) -> Any:
    request = urllib.request.Request(
        f"{api_url}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30.0) as response:
        return json.loads(response.read() or b"null")


def send_labels(setup: LoopSetup) -> int:
    """Label every sampled prediction not yet labelled, through POST /api/v1/feedback; returns how many."""
    with setup.cloud.session() as session:
        labels = setup.annotator.label(_unlabelled(session, setup.model_id))
    for start in range(0, len(labels), LABEL_BATCH):
        _post(setup.cloud.api_url, setup.token, "/api/v1/feedback", {"labels": labels[start : start + LABEL_BATCH]})
    return len(labels)


def settle(setup: LoopSetup, timeout_s: float = 30.0) -> list[str]:
    """Wait until the cloud has every device's telemetry and the sample count stops growing."""
    from cloud.cli.demo import wait_for_telemetry

    missing = wait_for_telemetry(setup.cloud, setup.expected, timeout_s)
    seen, deadline = -1, time.monotonic() + 5.0
    while time.monotonic() < deadline:
        with setup.cloud.session() as session:
            count = session.exec(select(func.count()).select_from(SampleRecord)).one()
        if count == seen:
            break
        seen = count
        time.sleep(0.3)
    return missing


def serve(setup: LoopSetup, per_device: int) -> None:
    """Every device answers per_device unlabelled requests and sends its telemetry window (with samples)."""
    for run in setup.fleet.run_inference(per_device, labelled=False):
        setup.expected[run.device_id] = setup.expected.get(run.device_id, 0) + run.inferences
    setup.fleet.flush_telemetry()


def accuracy_by_device(session: Session, model_id: str, version: str) -> dict[str, feedback.AccuracyLine]:
    return {line.key: line for line in feedback.field_accuracy(session, model_id, version, by="device")}


def close_the_loop(console: Console, setup: LoopSetup, champion: str, manifest_valid_days: float) -> dict[str, Any]:
    from cloud.cli.pipeline import describe
    from cloud.training import retrain as loop
    from cloud.training import watch
    from cloud.training.triggers import TriggerPolicy
    from cloud.types import now_ms

    cloud = setup.cloud
    with cloud.session() as session:
        trigger = watch.detect(session, setup.model_id, TriggerPolicy(), now_ms=now_ms())
    if trigger is None:
        console.print("no retrain trigger fired (no drift alert, no accuracy drop): the loop has nothing to fix")
        return {"trigger": None}
    console.print(f"retrain triggered by {trigger.kind.value}: {trigger.reason}")
    # the simulated devices share one Python process with the cloud: a call's latency there is mostly its
    # wait for the interpreter lock (1-2 ms spikes on a quiet machine, 5-7 ms on a busy one, old model or
    # new), so the latency gate only breaches on a rise of 50 ms; installs, errors and the rest gate as in
    # any rollout
    policy = loop.RetrainPolicy(on_win="canary", canary=1, dwell_s=1.0, min_inferences=4 * ROUND_INFERENCES,
                                gate_overrides={"min_p95_increase_us": 50_000.0},
                                manifest_valid_days=manifest_valid_days)  # fmt: skip
    with console.status("retrain: snapshot, train, compile, evaluate, decide"):
        result = cloud.retrain(setup.model_id, trigger=trigger, actor="demo", policy=policy)
    console.print(describe(result))
    console.print("  steps: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.step_timings_s.items()))
    facts: dict[str, Any] = {"trigger": trigger.kind.value, "outcome": result.verdict.outcome.value,
                             "challenger": result.challenger, "champion": champion}  # fmt: skip
    if result.challenger is None or result.deployment_id is None:
        console.print("the challenger did not win: the champion stays")
        return facts
    state, rollout_s = _follow(console, setup, result.deployment_id)
    facts.update(rollout_state=state, rollout_s=rollout_s)
    if state != "completed":
        console.print(f"[red]the canary rollout ended {state}[/]")
        return facts
    serve(setup, setup.inferences)
    settle(setup)
    sent = send_labels(setup)
    with cloud.session() as session:
        # the controller moved them when the canary completed (promote_on_canary); if it is off, the demo does
        moved = loop.promote(session, setup.model_id, result.challenger, actor="demo",
                             reason=f"canary rollout {result.deployment_id[:8]} completed; gates passed")  # fmt: skip
        mover = aliases.history(session, setup.model_id, aliases.PRODUCTION)[-1].actor
    by = "the demo" if moved else f"the {mover}, as the canary completed"
    console.print(f"{sent} more labels sent back; champion, production -> v{result.challenger} (moved by {by})")
    with cloud.session() as session:
        facts["accuracy"] = _render_recovery(console, session, setup, champion, result.challenger)
        facts["aliases"] = aliases.current(session, setup.model_id)
        facts["alias_moves"] = len(aliases.history(session, setup.model_id))
    return facts


def _follow(console: Console, setup: LoopSetup, deployment_id: str) -> tuple[str, float]:
    """Keep the devices serving while the controller opens and judges the waves; print each change."""
    started, last = time.perf_counter(), None
    deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
    state = "running"
    while time.monotonic() < deadline:
        serve(setup, ROUND_INFERENCES)
        with setup.cloud.session() as session:
            rollout = session.get(Rollout, deployment_id)
            assert rollout is not None
            state, wave, waves, reason = rollout.state, rollout.current_wave, rollout.waves, rollout.reason
        if (state, wave) != last and wave >= 0:
            opened = ", ".join(waves[wave]) if 0 <= wave < len(waves) else "-"
            console.print(f"  canary rollout {deployment_id[:8]}: {state}, wave {wave + 1}/{len(waves)} ({opened})"
                          + (f": {reason}" if reason else ""))  # fmt: skip
            last = (state, wave)
        if state in ("completed", "rolled_back", "cancelled", "paused"):
            break
        time.sleep(0.2)
    return state, time.perf_counter() - started


def _render_recovery(
    console: Console, session: Session, setup: LoopSetup, before: str, after: str
) -> dict[str, dict[str, float | None]]:
    old, new = accuracy_by_device(session, setup.model_id, before), accuracy_by_device(session, setup.model_id, after)
    table = compact_table(f"Accuracy from field labels: v{before} (champion) -> v{after} (retrained)")
    for column in ("device", "site", f"v{before} acc", "95 % CI", "n", f"v{after} acc", "95 % CI ", "n "):
        table.add_column(column, justify="left" if column in ("device", "site") else "right", no_wrap=True)
    figures: dict[str, dict[str, float | None]] = {}
    for device_id in setup.device_ids:
        cells = []
        for line in (old.get(device_id), new.get(device_id)):
            if line is None or line.accuracy is None:
                cells += ["-", "-", "0"]
                continue
            cells += [f"{line.accuracy:.3f}", f"{line.low:.2f}-{line.high:.2f}", str(line.labelled)]
        site = "drifted" if device_id in setup.drifted else "baseline"
        table.add_row(device_id, site, *cells)
        figures[device_id] = {
            "before": old[device_id].accuracy if device_id in old else None,
            "after": new[device_id].accuracy if device_id in new else None,
        }
    console.print(table)
    return figures
