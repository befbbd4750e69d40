"""The staged-rollout controller on a real database: waves open one by one as the fleet's own telemetry
passes the gates, a model that misbehaves in its first wave is rolled back there, operators pause, resume,
cancel and roll back, a restarted cloud goes on where it was, and two cloud processes stepping the same
rollouts never take a step twice."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session, col, select
from support.controller_process import run_controller
from support.enrollment import enroll
from support.telemetry_fleet import TelemetryFleet, fleet_on_v1, version_of

from cloud.db import DeploymentStatus, RolloutState, create_tables, make_engine
from cloud.db.tables import DeploymentCreate
from cloud.errors import ConflictError, InvalidRequestError
from cloud.rollout import Deployer, Director, get_deployment
from cloud.rollout.controller import RolloutController
from cloud.rollout.policy import GateRequest, RolloutPolicy
from cloud.rollout.progress import Action
from cloud.rollout.records import Rollout, RolloutDecision, RolloutGateSample
from edge_agent.transport import MemoryBroker, MemoryTransport

DEVICES = [f"pi-{i:02d}" for i in range(10)]
GATES = GateRequest(min_devices=1, min_inferences=50)


@pytest.fixture
def world(any_engine: Engine, register, director: Director):  # type: ignore[no-untyped-def]
    deployer, fleet, clock = fleet_on_v1(any_engine, register, director, DEVICES)
    return deployer, RolloutController(deployer), fleet, clock


def versions(fleet: TelemetryFleet) -> dict[str, str]:
    found = {}
    for device_id in DEVICES:
        state = fleet.desired(device_id)
        found[device_id] = version_of(state) if state else "-"
    return found


def decisions(engine: Engine, deployment_id: str) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(select(RolloutDecision).where(RolloutDecision.deployment_id == deployment_id)
                            .order_by(col(RolloutDecision.id)))  # fmt: skip
        return [r.action for r in rows]


def test_waves_open_one_by_one_as_each_passes_and_dwells(world) -> None:  # type: ignore[no-untyped-def]
    deployer, controller, fleet, clock = world
    policy = RolloutPolicy(strategy="waves", first_wave=2, growth=2, dwell_s=60, gates=GATES)
    deployment = deployer.deploy(DeploymentCreate(model_id="m", version="2", device_ids=DEVICES), staged=policy)
    assert set(versions(fleet).values()) == {"-"}  # planned, nothing sent yet
    with Session(deployer.engine) as session:
        rollout = session.get(Rollout, deployment.id)
        assert rollout is not None and [len(w) for w in rollout.waves] == [2, 4, 4]
    seen = []
    for _ in range(12):
        seen.append(controller.step(deployment.id))
        fleet.live()
        clock.ms += 35_000
        if seen[-1] is Action.OPEN_WAVE:
            on_v2 = sum(v == "2" for v in versions(fleet).values())
            assert on_v2 in (2, 6, 10)  # exactly the waves opened so far
    assert [a for a in seen if a not in (Action.WAIT, None)] == [
        Action.OPEN_WAVE, Action.PASSED, Action.OPEN_WAVE, Action.PASSED, Action.OPEN_WAVE, Action.PASSED,
        Action.COMPLETE,
    ]  # fmt: skip
    assert set(versions(fleet).values()) == {"2"}
    with Session(deployer.engine) as session:
        assert get_deployment(session, deployment.id).status == DeploymentStatus.SUCCEEDED
        rollout = session.get(Rollout, deployment.id)
        assert rollout is not None and rollout.state == RolloutState.COMPLETED
        assert rollout.last_verdict["decision"] == "pass"
    assert decisions(deployer.engine, deployment.id).count("open_wave") == 3
    with Session(deployer.engine) as session:
        samples = session.exec(select(RolloutGateSample).where(RolloutGateSample.deployment_id == deployment.id)).all()
    judged = sum(a is not None for a in seen) - 1  # every step judged the open wave, but the very first
    assert len(samples) == judged  # 35 s between steps, sampled every 30 s: every judged step is kept
    assert {s.wave for s in samples} == {0, 1, 2} and all(s.values["error_rate"] == 0.0 for s in samples)


def test_a_model_that_errors_is_stopped_in_its_first_wave_and_rolled_back(world) -> None:  # type: ignore[no-untyped-def]
    deployer, controller, fleet, clock = world
    fleet.error_share["2"] = 0.2  # passes its self-test, fails one inference in five in the field
    policy = RolloutPolicy(strategy="canary", canary=2, dwell_s=60, gates=GATES)
    deployment = deployer.deploy(DeploymentCreate(model_id="m", version="2", device_ids=DEVICES), staged=policy)
    assert controller.step(deployment.id) is Action.OPEN_WAVE
    canaries = [d for d, v in versions(fleet).items() if v == "2"]
    assert len(canaries) == 2
    fleet.live()
    clock.ms += 10_000
    assert controller.step(deployment.id) is Action.ROLLBACK
    assert versions(fleet) == {d: ("1" if d in canaries else "-") for d in DEVICES}  # back; the rest untouched
    with Session(deployer.engine) as session:
        assert get_deployment(session, deployment.id).status == DeploymentStatus.ROLLED_BACK
        rollout = session.get(Rollout, deployment.id)
        assert rollout is not None and rollout.state == RolloutState.ROLLED_BACK
        assert rollout.reason.startswith("error_rate 0.2 over")
    assert decisions(deployer.engine, deployment.id) == ["open_wave", "verdict_breach", "rollback"]
    assert controller.step(deployment.id) is None  # finished: nothing more happens


def test_the_controller_names_its_open_waves_devices_to_the_ingestor(world) -> None:  # type: ignore[no-untyped-def]
    """Whose telemetry the gates wait for (the service's ingestor stores it first): the open wave's devices,
    from the tick that opens it until the rollout ends."""
    deployer, controller, fleet, clock = world
    watched: list[set[str]] = []
    controller.on_watch = watched.append
    fleet.error_share["2"] = 0.2
    policy = RolloutPolicy(strategy="canary", canary=2, dwell_s=60, gates=GATES)
    deployment = deployer.deploy(DeploymentCreate(model_id="m", version="2", device_ids=DEVICES), staged=policy)
    assert controller.tick() == {deployment.id: Action.OPEN_WAVE}
    canaries = {d for d, v in versions(fleet).items() if v == "2"}
    assert watched == [canaries] and len(canaries) == 2
    fleet.live()
    clock.ms += 10_000
    assert controller.tick() == {deployment.id: Action.ROLLBACK}
    assert watched == [canaries, set()]  # rolled back: nothing to wait for


def test_a_rollback_returns_devices_to_what_they_ran_not_to_a_stale_registry_row(
    world, any_engine: Engine, register
) -> None:  # type: ignore[no-untyped-def]
    """The devices took version 2, but their reports still wait in the ingestion queue when a canary of 3
    opens: their registry rows say 1. The canaries then report 3 active, naming 2 as their previous model,
    and 3 breaches: they go back to 2, the model they ran, not to the row's 1."""
    deployer, controller, fleet, clock = world
    with Session(any_engine) as session:
        register(session, "m")  # version 3
    deployer.deploy(DeploymentCreate(model_id="m", version="2", device_ids=DEVICES))
    for device_id in DEVICES:
        fleet.install(device_id, "2")  # activated; its report has not reached the registry yet
    fleet.error_share["3"] = 0.2
    policy = RolloutPolicy(strategy="canary", canary=2, dwell_s=60, gates=GATES)
    deployment = deployer.deploy(DeploymentCreate(model_id="m", version="3", device_ids=DEVICES), staged=policy)
    assert controller.step(deployment.id) is Action.OPEN_WAVE
    canaries = [d for d, v in versions(fleet).items() if v == "3"]
    assert len(canaries) == 2
    fleet.live()
    clock.ms += 10_000
    assert controller.step(deployment.id) is Action.ROLLBACK
    assert {d: versions(fleet)[d] for d in canaries} == {d: "2" for d in canaries}


def test_the_baseline_is_read_once_per_wave_not_on_every_step(world) -> None:  # type: ignore[no-untyped-def]
    """The previous model's figures cover a span that ended when the wave opened: a step reads only the new
    model's telemetry (the baseline was a day of the wave's windows, re-read on every step)."""
    deployer, controller, fleet, clock = world
    policy = RolloutPolicy(strategy="canary", canary=2, dwell_s=3600, gates=GATES)
    deployment = deployer.deploy(DeploymentCreate(model_id="m", version="2", device_ids=DEVICES), staged=policy)
    assert controller.step(deployment.id) is Action.OPEN_WAVE
    reads: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "FROM telemetryrecord" in statement:
            reads.append(statement)

    event.listen(deployer.engine, "before_cursor_execute", count)
    try:
        steps = []
        for _ in range(3):
            fleet.live()
            clock.ms += 10_000
            steps.append(controller.step(deployment.id))
    finally:
        event.remove(deployer.engine, "before_cursor_execute", count)
    assert steps[0] is Action.PASSED  # judged against the baseline: it passed
    with Session(deployer.engine) as session:
        rollout = session.get(Rollout, deployment.id)
        assert rollout is not None
        details = {g["gate"]: g["detail"] for g in rollout.last_verdict["gates"]}
        assert "against" in details["p95_latency"], details  # judged against the previous model's figures
    assert len(reads) == 3 + 1  # the new model's figures each step, the baseline once


def test_operators_pause_resume_cancel_and_roll_back(world) -> None:  # type: ignore[no-untyped-def]
    deployer, controller, fleet, clock = world
    policy = RolloutPolicy(strategy="waves", first_wave=2, dwell_s=0, gates=GATES, on_breach="pause")
    deployment = deployer.deploy(DeploymentCreate(model_id="m", version="2", device_ids=DEVICES), staged=policy)
    controller.step(deployment.id)
    paused = controller.pause(deployment.id, "token abc (alice)")
    assert paused.state == RolloutState.PAUSED and "alice" in paused.reason
    fleet.live()
    assert controller.step(deployment.id) is None  # a paused rollout does not move
    with pytest.raises(ConflictError):
        controller.pause(deployment.id, "bob")
    controller.resume(deployment.id, "alice")
    assert controller.step(deployment.id) is Action.OPEN_WAVE  # the first wave passed: the second opens
    rolled = controller.rollback(deployment.id, "alice")
    assert rolled.state == RolloutState.ROLLED_BACK
    assert set(versions(fleet).values()) <= {"1", "-"}
    with pytest.raises(ConflictError):
        controller.cancel(deployment.id, "alice")
    assert decisions(deployer.engine, deployment.id) == [
        "open_wave", "pause", "resume", "verdict_pass", "open_wave", "rollback",
    ]  # fmt: skip


def test_an_operator_action_wins_over_a_controller_step_committed_meanwhile(world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Woken by telemetry, the controller steps often; a step that commits between an operator's read and
    claim must not turn a legitimate pause into a 409 (PostgreSQL: on SQLite the operator's transaction holds
    the write lock from its first read, so no step commits meanwhile)."""
    deployer, controller, _, _ = world
    if deployer.engine.dialect.name == "sqlite":
        pytest.skip("SQLite serialises the operator's transaction with every step")
    policy = RolloutPolicy(strategy="waves", first_wave=2, dwell_s=0, gates=GATES)
    deployment = deployer.deploy(DeploymentCreate(model_id="m", version="2", device_ids=DEVICES), staged=policy)
    controller.step(deployment.id)
    real_claim, steps = controller._claim, []

    def step_first(session, rollout):  # type: ignore[no-untyped-def]
        if not steps:
            steps.append("stepping")  # the step claims too: only the operator's first claim is raced
            steps[0] = controller.step(deployment.id)  # commits revision + 1 in its own session
        return real_claim(session, rollout)

    monkeypatch.setattr(controller, "_claim", step_first)
    paused = controller.pause(deployment.id, "alice")
    assert steps == [Action.WAIT] and paused.state == RolloutState.PAUSED


def test_a_selector_that_matches_nothing_or_only_unfit_devices_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    deployer, _, _, _ = world
    policy = RolloutPolicy(strategy="canary", canary=1)
    with pytest.raises(InvalidRequestError, match="no device matches"):
        deployer.deploy(DeploymentCreate(model_id="m", labels={"site": "nowhere"}), staged=policy)
    with Session(deployer.engine) as session:
        assert session.exec(select(Rollout)).all() == []


@pytest.mark.postgres
def test_two_cloud_processes_never_take_the_same_step_twice(
    postgres_url: str, register, director: Director, keys_dir: Path
) -> None:
    """Two processes, each with its own controller, engine and connections, step the same rollouts as fast
    as they can: every wave is opened exactly once."""
    engine = make_engine(postgres_url)
    create_tables(engine)
    with Session(engine) as session:
        register(session, "m")
    enroll(engine, *DEVICES)
    transport = MemoryTransport(MemoryBroker())
    transport.start()
    deployer = Deployer(engine, transport, director=director, chunk_size_bytes=1024)
    policy = RolloutPolicy(strategy="waves", first_wave=1, growth=1, dwell_s=0,
                           gates=GateRequest(min_devices=0, min_inferences=0))  # fmt: skip
    ids = [deployer.deploy(DeploymentCreate(model_id="m", device_ids=DEVICES[i::3]), staged=policy).id
           for i in range(3)]  # fmt: skip
    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=run_controller, args=(postgres_url, str(keys_dir), 30)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(180)
        assert process.exitcode == 0
    with Session(engine) as session:
        for deployment_id in ids:
            rollout = session.get(Rollout, deployment_id)
            assert rollout is not None and rollout.state == RolloutState.COMPLETED
            opened = decisions(engine, deployment_id).count("open_wave")
            assert opened == len(rollout.waves), (deployment_id, decisions(engine, deployment_id))
    engine.dispose()


def test_a_restarted_cloud_goes_on_where_the_rollout_was(world) -> None:  # type: ignore[no-untyped-def]
    deployer, controller, fleet, clock = world
    policy = RolloutPolicy(strategy="waves", first_wave=2, growth=2, dwell_s=0, gates=GATES)
    deployment = deployer.deploy(DeploymentCreate(model_id="m", version="2", device_ids=DEVICES), staged=policy)
    assert controller.step(deployment.id) is Action.OPEN_WAVE
    fleet.live()
    controller.stop()  # the cloud goes down; a new process builds everything anew from the database
    again = RolloutController(Deployer(deployer.engine, deployer.publisher, director=deployer.director,
                                       chunk_size_bytes=1024, clock=clock))  # fmt: skip
    assert again.step(deployment.id) is Action.OPEN_WAVE  # the second wave, not the first again
    with Session(deployer.engine) as session:
        rollout = session.get(Rollout, deployment.id)
        assert rollout is not None and rollout.current_wave == 1
    assert decisions(deployer.engine, deployment.id) == ["open_wave", "verdict_pass", "open_wave"]


def test_a_gate_that_gets_its_first_value_is_sampled_at_once(world) -> None:  # type: ignore[no-untyped-def]
    # shadow comparisons arrive after the wave's first judged step; with samples kept every 10 min the console's
    # shadow chart said "no data yet" beside a verdict of "20 of 20 agreed"
    deployer, _controller, fleet, clock = world
    controller = RolloutController(deployer, sample_every_ms=600_000)
    policy = RolloutPolicy(strategy="canary", canary=2, dwell_s=600, gates=GATES)
    deployment = deployer.deploy(DeploymentCreate(model_id="m", version="2", device_ids=DEVICES), staged=policy)
    assert controller.step(deployment.id) is Action.OPEN_WAVE
    canaries = [d for d, v in versions(fleet).items() if v == "2"]
    clock.ms += 5_000
    for device_id in canaries:
        fleet.window(device_id, "2")
    controller.step(deployment.id)  # judged: the first sample, shadow_agreement without a value
    clock.ms += 5_000
    for device_id in canaries:
        fleet.window(device_id, "2", shadow=(10, 10))
    controller.step(deployment.id)
    with Session(deployer.engine) as session:
        samples = session.exec(select(RolloutGateSample).where(RolloutGateSample.deployment_id == deployment.id)
                               .order_by(col(RolloutGateSample.id))).all()  # fmt: skip
    assert [s.values.get("shadow_agreement") for s in samples] == [None, 1.0]
