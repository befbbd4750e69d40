"""The staged-rollout controller: steps every running rollout, and carries out operators' pause, resume,
cancel and rollback. Its state is all in the database (`cloud.rollout.records`), so a restarted cloud goes
on where it was, and any number of cloud processes may run it at once.

A step reads the rollout, claims it by bumping `revision` with a conditional UPDATE (a second process
stepping the same rollout finds the revision moved and backs off: no step is taken twice), judges the open
wave on the fleet's telemetry (`figures` + `gates`), decides with the pure rules of `progress`, writes the
outcome and its decision row, commits, and only then publishes the desired states it decided (as the
Deployer does). Baseline: the previous model most of the wave ran, on those same devices, in the
`baseline_lookback_ms` before the wave opened.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from cloud.db import RolloutState, TargetStatus
from cloud.db.tables import Deployment, DeploymentCreate, DeploymentTarget, Device
from cloud.errors import ConflictError, NotFoundError
from cloud.identity.enrollment import expected_devices
from cloud.periodic import Periodic
from cloud.rollout.deployer import Deployer
from cloud.rollout.deployments import refresh_status, targets_of
from cloud.rollout.figures import figures_for
from cloud.rollout.gates import ArmFigures, GatePolicy, InstallTally, Verdict, judge
from cloud.rollout.plan import Outgoing, plan_deployment, target_devices
from cloud.rollout.progress import Action, OnBreach, Position, next_action
from cloud.rollout.promotion import promote_completed_canary
from cloud.rollout.records import Rollout, RolloutDecision, RolloutGateSample

log = logging.getLogger(__name__)

CONTROLLER = "controller"
BeforeCommit = Callable[[Session], object]
DAY_MS = 86_400_000
_OPERATOR_CLAIMS = 3
_MAX_BASELINES = 1024  # waves' baselines kept; past that they are read afresh


class RolloutController(Periodic):
    name = "edgefleet-rollouts"

    def __init__(
        self, deployer: Deployer, *, interval_s: float = 10.0, baseline_lookback_ms: int = DAY_MS,
        sample_every_ms: int = 30_000, promote_on_canary: bool = True,
    ) -> None:  # fmt: skip
        self.deployer = deployer
        self.promote_on_canary = promote_on_canary  # a challenger's completed canary moves champion, production
        self.interval_s = interval_s
        self.baseline_lookback_ms = baseline_lookback_ms
        self.sample_every_ms = sample_every_ms  # how often the gate values are kept for the console
        # (deployment, wave, model@version, wave opened at) -> the baseline's figures: they cover a span that
        # ended when the wave opened, so they are read once per wave, not on every step (a day of a wave's
        # telemetry, re-read up to 5 times a second while telemetry arrives); windows of that span that
        # arrive after it opened are left out
        self._baselines: dict[tuple[str, int, str, int], ArmFigures] = {}
        # called with the devices of every open wave whenever they change (the service: the ingestor stores
        # their telemetry ahead of the rest of the fleet's)
        self.on_watch: Callable[[set[str]], object] | None = None
        self._open_waves: dict[str, frozenset[str]] = {}  # running rollout -> its open wave's devices
        self._watched: set[str] = set()

    @property
    def clock(self) -> Callable[[], int]:
        return self.deployer.clock

    def tick(self) -> dict[str, Action]:
        """One step of every running rollout; deployment id -> what it did (claimed elsewhere: absent)."""
        with Session(self.deployer.engine) as session:
            running = list(session.exec(select(Rollout.deployment_id).where(Rollout.state == RolloutState.RUNNING)))
        done = {}
        for deployment_id in running:
            action = self.step(deployment_id)
            if action is not None:
                done[deployment_id] = action
        for gone in set(self._open_waves) - set(running):  # ended, paused or rolled back elsewhere
            del self._open_waves[gone]
        self._publish_watch()
        return done

    def _note_open_wave(self, rollout: Rollout) -> None:
        if rollout.state == RolloutState.RUNNING and rollout.current_wave >= 0:
            self._open_waves[rollout.deployment_id] = frozenset(rollout.waves[rollout.current_wave])
        else:
            self._open_waves.pop(rollout.deployment_id, None)

    def _publish_watch(self) -> None:
        watched = set().union(*self._open_waves.values())
        if watched != self._watched and self.on_watch is not None:
            self.on_watch(watched)
        self._watched = watched

    def step(self, deployment_id: str) -> Action | None:
        director = self.deployer.director
        with Session(self.deployer.engine, expire_on_commit=False) as session:
            rollout = session.get(Rollout, deployment_id)
            if rollout is not None:  # as read: another process may take this step (watched all the same)
                self._note_open_wave(rollout)
            if rollout is None or rollout.state != RolloutState.RUNNING or not self._claim(session, rollout):
                return None
            deployment = session.get(Deployment, deployment_id)
            assert deployment is not None  # a foreign key
            now = self.clock()
            verdict = self._judge(session, rollout, deployment) if rollout.current_wave >= 0 else None
            action = next_action(_position(rollout), verdict.decision if verdict else None, now)
            outgoing = self._apply(session, rollout, deployment, action, verdict, now)
            session.commit()
        self._note_open_wave(rollout)
        if action is not Action.WAIT:
            log.info("rollout %s: %s (wave %d of %d)", deployment_id, action.value, rollout.current_wave + 1,
                     len(rollout.waves))  # fmt: skip
        self.deployer.publish(outgoing, fleet=director.fleet)
        return action

    # -- operators ------------------------------------------------------------------------------------------

    def pause(self, deployment_id: str, actor: str, *, before_commit: BeforeCommit | None = None) -> Rollout:
        return self._operate(deployment_id, actor, "pause", {RolloutState.RUNNING}, RolloutState.PAUSED, before_commit)

    def resume(self, deployment_id: str, actor: str, *, before_commit: BeforeCommit | None = None) -> Rollout:
        return self._operate(deployment_id, actor, "resume", {RolloutState.PAUSED}, RolloutState.RUNNING, before_commit)

    def cancel(self, deployment_id: str, actor: str, *, before_commit: BeforeCommit | None = None) -> Rollout:
        allowed = {RolloutState.RUNNING, RolloutState.PAUSED}
        return self._operate(deployment_id, actor, "cancel", allowed, RolloutState.CANCELLED, before_commit)

    def rollback(self, deployment_id: str, actor: str, *, before_commit: BeforeCommit | None = None) -> Rollout:
        allowed = {RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.COMPLETED}
        return self._operate(deployment_id, actor, "rollback", allowed, RolloutState.ROLLED_BACK, before_commit)

    def _operate(
        self, deployment_id: str, actor: str, action: str, allowed: set[RolloutState], to: RolloutState,
        before_commit: BeforeCommit | None,
    ) -> Rollout:  # fmt: skip
        """Move the rollout to `to` if its state allows; `before_commit(session)` writes in the same
        transaction (the API's audit row)."""
        director = self.deployer.director
        outgoing: list[Outgoing] = []
        with Session(self.deployer.engine, expire_on_commit=False) as session:
            rollout = self._claim_for_operator(session, deployment_id, action, allowed)
            deployment = session.get(Deployment, deployment_id)
            assert deployment is not None
            now = self.clock()
            detail: dict[str, Any] = {}
            if to is RolloutState.ROLLED_BACK:
                outgoing, detail = self._roll_back(session, rollout, deployment)
            if to is RolloutState.RUNNING:  # judged afresh: the stall timer and the dwell start again
                rollout.wave_opened_ms, rollout.wave_passed_ms = now, None
            rollout.state, rollout.reason, rollout.updated_at_ms = to, f"{action} by {actor}", now
            session.add(rollout)
            _decide(session, rollout, action, actor, detail, now)
            session.flush()
            refresh_status(session, deployment_id)
            if before_commit is not None:
                before_commit(session)
            session.commit()
        self.deployer.publish(outgoing, fleet=director.fleet)
        return rollout

    def _claim_for_operator(self, session: Session, deployment_id: str, action: str,
                            allowed: set[RolloutState]) -> Rollout:  # fmt: skip
        """The rollout, claimed, if its state allows `action`. A claim lost to a controller step that committed
        meanwhile (woken by telemetry, steps come often) is tried again on the row as that step left it."""
        state = ""
        for _ in range(_OPERATOR_CLAIMS):
            rollout = session.get(Rollout, deployment_id, populate_existing=True)
            if rollout is None:
                raise NotFoundError(f"no staged rollout {deployment_id}")
            state = rollout.state
            if RolloutState(state) not in allowed:
                break
            if self._claim(session, rollout):
                return rollout
        raise ConflictError(f"rollout {deployment_id} is {state}: cannot {action} it now")

    # -- a step's parts -------------------------------------------------------------------------------------

    def _claim(self, session: Session, rollout: Rollout) -> bool:
        claimed = session.execute(
            update(Rollout)
            .where(col(Rollout.deployment_id) == rollout.deployment_id, col(Rollout.revision) == rollout.revision)
            .values(revision=rollout.revision + 1)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            return False
        rollout.revision += 1  # the row already holds it; keep the loaded object in step
        return True

    def _judge(self, session: Session, rollout: Rollout, deployment: Deployment) -> Verdict:
        wave = rollout.waves[rollout.current_wave]
        opened = {d for w in rollout.waves[: rollout.current_wave + 1] for d in w}
        statuses = [t.status for t in targets_of(session, deployment.id) if t.device_id in opened]
        install = InstallTally(len(opened), statuses.count(TargetStatus.FAILED))
        since = rollout.wave_opened_ms or 0
        new = figures_for(session, wave, deployment.model_id, deployment.version, since_ms=since)
        baseline = None
        common = Counter(rollout.previous.get(d, "") for d in wave if rollout.previous.get(d)).most_common(1)
        if common:
            baseline = self._baseline(session, rollout, wave, common[0][0], since)
        policy = GatePolicy(**rollout.gates)
        policy = replace(policy, min_devices=min(policy.min_devices, len(wave)))  # a wave of 1 can judge
        return judge(policy, install, new, baseline)

    def _baseline(self, session: Session, rollout: Rollout, wave: list[str], previous: str,
                  since: int) -> ArmFigures | None:  # fmt: skip
        """The previous model's figures on the wave's devices in the lookback before the wave opened (None
        without any), read once per wave."""
        key = (rollout.deployment_id, rollout.current_wave, previous, since)
        found = self._baselines.get(key)
        if found is None:
            model_id, _, version = previous.rpartition("@")
            found = figures_for(session, wave, model_id, version, since_ms=since - self.baseline_lookback_ms,
                                until_ms=since)  # fmt: skip
            if found.inferences + found.errors == 0:
                return None  # nothing yet: asked again next step
            if len(self._baselines) >= _MAX_BASELINES:
                self._baselines.clear()
            self._baselines[key] = found
        return found

    def _apply(
        self, session: Session, rollout: Rollout, deployment: Deployment, action: Action, verdict: Verdict | None,
        now: int,
    ) -> list[Outgoing]:  # fmt: skip
        outgoing: list[Outgoing] = []
        gates = _verdict_json(verdict, now) if verdict else {}
        changed = bool(gates) and gates["decision"] != rollout.last_verdict.get("decision")
        if changed:
            _decide(session, rollout, f"verdict_{gates['decision']}", CONTROLLER, gates, now)
        # a sample also when a gate gets its first value (shadow figures come after the wave's first samples:
        # the console's chart said "no data yet" beside a verdict of "20 of 20 agreed")
        if verdict is not None and (changed or _gains_a_value(rollout.last_verdict, verdict)
                                    or now - (rollout.last_sample_ms or 0) >= self.sample_every_ms):  # fmt: skip
            session.add(RolloutGateSample(deployment_id=rollout.deployment_id, at_ms=now, wave=rollout.current_wave,
                                          decision=verdict.decision.value,
                                          values={g.gate: g.value for g in verdict.gates}))  # fmt: skip
            rollout.last_sample_ms = now
        if gates:
            rollout.last_verdict = gates
        detail: dict[str, Any] = {"verdict": gates} if gates else {}
        if action is Action.OPEN_WAVE:
            outgoing = self._open_next_wave(session, rollout, deployment, now)
            detail = {"devices": len(rollout.waves[rollout.current_wave])}
        elif action is Action.PASSED:
            rollout.wave_passed_ms = now
        elif action is Action.COMPLETE:
            rollout.state, rollout.reason = RolloutState.COMPLETED, "every wave passed its gates"
            if self.promote_on_canary:
                detail["promoted"] = promote_completed_canary(session, deployment, rollout.waves, actor=CONTROLLER)
        elif action in (Action.PAUSE, Action.STALLED):
            rollout.state = RolloutState.PAUSED
            rollout.reason = (_breach_reason(verdict) if action is Action.PAUSE else
                              f"wave {rollout.current_wave + 1} gathered too little telemetry to judge within "
                              f"{rollout.max_wait_s} s")  # fmt: skip
        elif action is Action.ROLLBACK:
            outgoing, undone = self._roll_back(session, rollout, deployment)
            detail.update(undone)
            rollout.state, rollout.reason = RolloutState.ROLLED_BACK, _breach_reason(verdict)
        if action is not Action.WAIT:
            _decide(session, rollout, action.value, CONTROLLER, detail, now)
        rollout.updated_at_ms = now
        session.add(rollout)
        session.flush()
        refresh_status(session, deployment.id)
        return outgoing

    def _open_next_wave(self, session: Session, rollout: Rollout, deployment: Deployment, now: int) -> list[Outgoing]:
        index = rollout.current_wave + 1
        wave = rollout.waves[index]
        devices = {d.id: d for d in session.exec(select(Device).where(col(Device.id).in_(wave)))}
        previous = dict(rollout.previous)
        for device_id in wave:
            device = devices.get(device_id)
            active = device is not None and device.active_model_id and device.active_version
            previous[device_id] = f"{device.active_model_id}@{device.active_version}" if active else ""  # type: ignore[union-attr]
        rollout.previous = previous
        rollout.current_wave, rollout.wave_opened_ms, rollout.wave_passed_ms = index, now, None
        rollout.reason = f"wave {index + 1} of {len(rollout.waves)} open"
        return target_devices(session, self.deployer.director, deployment, wave, self.clock)

    def _roll_back(self, session: Session, rollout: Rollout, deployment: Deployment) -> tuple[list[Outgoing], dict]:
        """Each opened device still on this deployment goes back to the model it ran before (`_return_to`), as
        an ordinary new deployment per previous version (next counter: devices accept it as the rollback it
        is)."""
        opened = [d for w in rollout.waves[: rollout.current_wave + 1] for d in w]
        live = {t.device_id: t for t in targets_of(session, deployment.id) if t.status != TargetStatus.SUPERSEDED}
        enrolled = expected_devices(session, [d for d in opened if d in live])
        devices = {d.id: d for d in session.exec(select(Device).where(col(Device.id).in_(list(enrolled))))}
        groups: dict[str, list[str]] = defaultdict(list)
        for device_id in opened:
            if device_id in enrolled:
                back = _return_to(live[device_id], devices.get(device_id), deployment,
                                  rollout.previous.get(device_id, ""))  # fmt: skip
                groups[back].append(device_id)
        outgoing: list[Outgoing] = []
        restored: dict[str, int] = {}
        for previous, device_ids in groups.items():
            if not previous:
                continue  # it ran nothing before: it keeps this model (the agent's probation guards it)
            model_id, _, version = previous.rpartition("@")
            request = DeploymentCreate(model_id=model_id, version=version, device_ids=device_ids)
            try:
                _, planned = plan_deployment(
                    session, request, director=self.deployer.director,
                    chunk_size_bytes=deployment.chunk_size_bytes, clock=self.clock,
                )  # fmt: skip
            except NotFoundError:
                log.warning("rollout %s: previous model %s is gone; %d device(s) keep the new one",
                            deployment.id, previous, len(device_ids))  # fmt: skip
                continue
            outgoing += planned
            restored[previous] = len(device_ids)
        kept = sum(len(ids) for prev, ids in groups.items() if prev not in restored)
        return outgoing, {"restored": restored, "kept_new_model": kept}


def _return_to(target: DeploymentTarget, device: Device | None, deployment: Deployment, at_open: str) -> str:
    """The model ("model@version", "" for none) a rollback returns one device to: the model it ran just
    before this deployment's, on the best evidence there is. The registry's device row can lag the device
    (its reports wait in the ingestion queue; a rollout started right after another saw rows still naming the
    model before last), so a guess made when the wave opened is the last resort:
      1. the previous model the device itself named when it reported this deployment's model active (the one
         it keeps loaded on probation);
      2. it never reported this deployment's model active: the model its latest report names, which it keeps;
      3. what its device row named when the wave opened."""
    if target.previous_model:
        return target.previous_model
    if device is not None and device.active_model_id and device.active_version:
        running = f"{device.active_model_id}@{device.active_version}"
        if running != f"{deployment.model_id}@{deployment.version}":
            return running
    return at_open


def _position(rollout: Rollout) -> Position:
    strategy = rollout.strategy
    return Position(
        state=RolloutState(rollout.state), current_wave=rollout.current_wave, wave_count=len(rollout.waves),
        wave_opened_ms=rollout.wave_opened_ms, wave_passed_ms=rollout.wave_passed_ms,
        dwell_ms=int(float(strategy.get("dwell_s", 0)) * 1000), max_wait_ms=rollout.max_wait_s * 1000,
        on_breach=OnBreach(rollout.on_breach),
    )  # fmt: skip


def _gains_a_value(last: dict[str, Any], verdict: Verdict) -> bool:
    """True when a gate that had no value in the last verdict has one now."""
    had = {g.get("gate") for g in last.get("gates", []) if isinstance(g, dict) and g.get("value") is not None}
    return any(g.value is not None and g.gate not in had for g in verdict.gates)


def _verdict_json(verdict: Verdict, now: int) -> dict[str, Any]:
    return {"decision": verdict.decision.value, "at_ms": now,
            "gates": [{**asdict(g), "decision": g.decision.value} for g in verdict.gates]}  # fmt: skip


def _breach_reason(verdict: Verdict | None) -> str:
    if verdict is None or not verdict.breaches:
        return "breach"
    return "; ".join(f"{g.gate} {g.value:.4g} over {g.threshold:.4g} ({g.detail})" if g.value is not None
                     else g.gate for g in verdict.breaches)[:500]  # fmt: skip


def _decide(session: Session, rollout: Rollout, action: str, actor: str, detail: dict[str, Any], now: int) -> None:
    session.add(RolloutDecision(deployment_id=rollout.deployment_id, at_ms=now, wave=rollout.current_wave,
                                action=action, actor=actor, detail=detail))  # fmt: skip
