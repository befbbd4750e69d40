"""Planning a staged (gated) rollout: the deployment row, its `Rollout` with every wave fixed up front,
and the same plan as a dry run. Nothing is targeted here: the controller opens the waves one by one.

The targets are resolved as for any deployment (explicit ids must be enrolled; label matches), then
optionally cut to a `share` of them, then split into waves by `cloud.rollout.waves` with devices that
cannot run the release skipped and named. Writes without committing, like `cloud.rollout.plan`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlmodel import Session, col, select

from cloud import registry
from cloud.db.tables import Deployment, DeploymentCreate, Device, ModelVersion
from cloud.errors import InvalidRequestError
from cloud.rollout.plan import STRATEGIES, resolve_targets
from cloud.rollout.policy import RolloutPolicy, stored_strategy
from cloud.rollout.records import Rollout
from cloud.rollout.waves import Candidate, Requirements, WavePlan, plan_waves, stable_order
from cloud.types import ClockMs, now_ms


@dataclass(frozen=True)
class StagedPlan:
    model_id: str
    version: str
    targets: int  # after the share cut, before skipping
    plan: WavePlan
    offline: tuple[str, ...] = ()  # planned devices offline now: their wave waits until they come back


def release_seed(mv: ModelVersion) -> str:
    return f"{mv.model_id}@{mv.version}"


def candidates(session: Session, device_ids: Sequence[str]) -> list[Candidate]:
    rows = {d.id: d for d in session.exec(select(Device).where(col(Device.id).in_(list(device_ids))))}
    found = []
    for device_id in device_ids:
        row = rows.get(device_id)
        if row is None:  # enrolled-to-be (an unspent token names it): nothing known yet, assumed able
            found.append(Candidate(device_id, online=False))
        else:
            arch = str((row.facts or {}).get("architecture", ""))
            found.append(Candidate(device_id, row.online, tuple(row.runtimes), row.agent_version, arch))
    return found


def requirements(session: Session, mv: ModelVersion) -> Requirements:
    return Requirements(runtimes=frozenset(a.runtime for a in registry.artifacts_of(session, mv.id or 0)))


def preview(session: Session, request: DeploymentCreate, policy: RolloutPolicy) -> StagedPlan:
    """The waves this request would get, without writing anything."""
    if request.strategy not in STRATEGIES:
        raise InvalidRequestError(f"strategy {request.strategy!r}: a staged rollout takes its strategy from "
                                  f"`rollout.strategy`")  # fmt: skip
    if not request.device_ids and not request.labels:
        raise InvalidRequestError("a deployment needs device_ids, a label selector, or both")
    mv = registry.get_model_version(session, request.model_id, request.version)
    seed = release_seed(mv)
    ids = resolve_targets(session, request.device_ids, request.labels)
    if policy.share is not None and ids:
        ids = stable_order(seed, ids)[: max(1, math.ceil(policy.share * len(ids)))]
    if not ids:
        selector = ",".join(f"{k}={v}" for k, v in sorted(request.labels.items()))
        raise InvalidRequestError(f"no device matches the selector {selector}")
    found = candidates(session, ids)
    needs = requirements(session, mv)
    if policy.min_agent_version:
        needs = replace(needs, min_agent_version=policy.min_agent_version)
    plan = plan_waves(seed, found, policy.strategy_spec(), needs)
    offline = tuple(c.device_id for c in found if not c.online and c.device_id not in plan.skipped)
    return StagedPlan(mv.model_id, mv.version, len(ids), plan, offline)


def plan_staged(
    session: Session, request: DeploymentCreate, policy: RolloutPolicy, *, chunk_size_bytes: int,
    clock: ClockMs = now_ms,
) -> tuple[Deployment, Rollout]:  # fmt: skip
    staged = preview(session, request, policy)
    if not staged.plan.waves:
        reasons = sorted(set(staged.plan.skipped.values()))
        raise InvalidRequestError(f"every one of the {staged.targets} target(s) was skipped ({', '.join(reasons)})")
    mv = registry.get_model_version(session, staged.model_id, staged.version)
    now = clock()
    deployment = Deployment(
        id=uuid.uuid4().hex[:16], model_version_id=mv.id or 0, model_id=mv.model_id, version=mv.version,
        device_ids=list(request.device_ids), labels=dict(request.labels), strategy=policy.strategy,
        chunk_size_bytes=chunk_size_bytes, created_at_ms=now,
    )  # fmt: skip
    session.add(deployment)
    session.flush()
    rollout = Rollout(
        deployment_id=deployment.id, strategy=stored_strategy(policy.strategy_spec()),
        gates=policy.gates.model_dump(), on_breach=policy.on_breach, max_wait_s=policy.max_wait_s,
        waves=staged.plan.waves, skipped={k: v.value for k, v in staged.plan.skipped.items()},
        created_at_ms=now, updated_at_ms=now,
    )  # fmt: skip
    session.add(rollout)
    session.flush()
    return deployment, rollout
