"""A/B experiments on a real database: a stable split, per-arm results from the arms' own telemetry with
confidence intervals, and promotion of the winner (refused until there is one)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll
from support.telemetry_fleet import Clock, TelemetryFleet, version_of

from cloud.errors import ConflictError, InvalidRequestError
from cloud.experiments import service as experiments
from cloud.experiments.records import ExperimentState, Metric
from cloud.rollout import Deployer, Director
from edge_agent.transport import MemoryBroker, MemoryTransport

DEVICES = [f"ab-{i:02d}" for i in range(20)]


@pytest.fixture
def lab(any_engine: Engine, register, director: Director):  # type: ignore[no-untyped-def]
    clock = Clock()
    broker = MemoryBroker()
    transport = MemoryTransport(broker)
    transport.start()
    deployer = Deployer(any_engine, transport, director=director, chunk_size_bytes=1024, clock=clock)
    with Session(any_engine) as session:
        register(session, "m")
        register(session, "m")
    enroll(any_engine, *DEVICES)
    return deployer, TelemetryFleet(any_engine, broker, clock, DEVICES)


def request(**changes: object) -> experiments.ExperimentRequest:
    fields: dict[str, object] = {"model_id": "m", "version_a": "1", "version_b": "2", "device_ids": DEVICES,
                                 "labels": {}, "min_trials": 500}  # fmt: skip
    return experiments.ExperimentRequest(**{**fields, **changes})  # type: ignore[arg-type]


def test_the_better_arm_wins_and_is_promoted_to_every_device(lab) -> None:  # type: ignore[no-untyped-def]
    deployer, fleet = lab
    fleet.accuracy.update({"1": 0.80, "2": 0.90})
    experiment = experiments.start(deployer, request())
    on_b = {d for d, arm in experiment.arms.items() if arm == "b"}
    assert len(on_b) == 10 and {version_of(fleet.desired(d)) for d in on_b} == {"2"}  # type: ignore[arg-type]
    assert {version_of(fleet.desired(d)) for d in set(DEVICES) - on_b} == {"1"}  # type: ignore[arg-type]
    fleet.live()  # one window per device: 100 labelled inferences each, 1,000 per arm
    with Session(deployer.engine) as session:
        first = experiments.results(session, experiment)
    a, b = first.arms
    assert (a.trials, b.trials) == (1000, 1000) and (a.successes, b.successes) == (800, 900)
    assert a.interval is not None and a.interval[0] < 0.8 < a.interval[1]
    assert first.comparison.winner == "b" and first.comparison.p_value is not None
    promoted = experiments.promote(deployer, experiment.id)
    assert promoted.state == ExperimentState.PROMOTED and promoted.winner == "b"
    assert {version_of(fleet.desired(d)) for d in DEVICES} == {"2"}  # type: ignore[arg-type]
    with pytest.raises(ConflictError):
        experiments.promote(deployer, experiment.id, "a")  # it has ended


def test_no_winner_is_promoted_on_too_little_or_too_similar_evidence(lab) -> None:  # type: ignore[no-untyped-def]
    deployer, fleet = lab
    fleet.accuracy.update({"1": 0.90, "2": 0.90})
    experiment = experiments.start(deployer, request(metric=Metric.ERROR_RATE))
    with pytest.raises(ConflictError, match="no significant winner"):
        experiments.promote(deployer, experiment.id)  # no telemetry yet
    fleet.live()
    with Session(deployer.engine) as session:
        assert experiments.results(session, experiment).comparison.winner is None  # same error rate: 0 and 0
    chosen = experiments.promote(deployer, experiment.id, "a")  # an operator may still choose an arm
    assert chosen.winner == "a" and {version_of(fleet.desired(d)) for d in DEVICES} == {"1"}  # type: ignore[arg-type]


def test_impossible_experiments_are_refused(lab) -> None:  # type: ignore[no-untyped-def]
    deployer, _ = lab
    for changes, needle in [({"version_b": "1"}, "two different versions"), ({"share_b": 1.0}, "share_b"),
                            ({"device_ids": DEVICES[:1]}, "at least two devices")]:  # fmt: skip
        with pytest.raises(InvalidRequestError, match=needle):
            experiments.start(deployer, request(**changes))


class _Deadlock(Exception):
    sqlstate = "40P01"  # what psycopg reports when PostgreSQL aborts a transaction as a deadlock victim


def test_start_and_promote_are_planned_again_after_a_deadlock(lab, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Both go through Deployer.commit_plan, which rolls back and plans again when the database aborts the
    transaction as a deadlock (seen on PostgreSQL with ingestion writing the same device rows)."""
    from sqlalchemy.exc import OperationalError

    from cloud.experiments import service

    deployer, fleet = lab
    real, failures = service.plan_deployment, []

    def deadlocking_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not failures:
            failures.append(1)
            raise OperationalError("UPDATE device ...", {}, _Deadlock())
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "plan_deployment", deadlocking_once)
    experiment = experiments.start(deployer, request())
    assert failures == [1] and len(experiment.arms) == len(DEVICES)
    assert {version_of(fleet.desired(d)) for d in DEVICES} == {"1", "2"}  # type: ignore[arg-type]
    failures.clear()
    promoted = experiments.promote(deployer, experiment.id, "a")
    assert failures == [1] and promoted.state == ExperimentState.PROMOTED
    assert {version_of(fleet.desired(d)) for d in DEVICES} == {"1"}  # type: ignore[arg-type]
