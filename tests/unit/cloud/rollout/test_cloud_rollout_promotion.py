"""A challenger's canary that completes on every device running the model moves `champion` and
`production` to it, recorded as the controller's move with why; a canary to part of the fleet, a plain
release, or the policy turned off moves nothing (on a real database, the fleet's own telemetry)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from support.telemetry_fleet import fleet_on_v1

from cloud.db import RolloutState
from cloud.db.tables import DeploymentCreate
from cloud.registry import aliases
from cloud.rollout import Director
from cloud.rollout.controller import RolloutController
from cloud.rollout.policy import GateRequest, RolloutPolicy
from cloud.rollout.records import Rollout, RolloutDecision

DEVICES = [f"pi-{i:02d}" for i in range(4)]
CANARY = RolloutPolicy(strategy="canary", canary=1, dwell_s=60, gates=GateRequest(min_devices=1, min_inferences=50))


@pytest.fixture
def world(any_engine: Engine, register, director: Director):  # type: ignore[no-untyped-def]
    deployer, fleet, clock = fleet_on_v1(any_engine, register, director, DEVICES)
    return deployer, fleet, clock


def _aliases(engine: Engine, **where: str) -> None:
    with Session(engine) as session:
        for alias, version in where.items():
            aliases.move(session, "m", alias, version, actor="ana", reason="set up")
        session.commit()


def _complete(world, devices: list[str], controller: RolloutController) -> str:  # type: ignore[no-untyped-def]
    deployer, fleet, clock = world
    deployment = deployer.deploy(DeploymentCreate(model_id="m", version="2", device_ids=devices), staged=CANARY)
    for _ in range(10):
        controller.step(deployment.id)
        fleet.live()
        clock.ms += 35_000
    with Session(deployer.engine) as session:
        rollout = session.get(Rollout, deployment.id)
        assert rollout is not None
        assert rollout.state == RolloutState.COMPLETED, rollout.reason
    return str(deployment.id)


def test_a_challengers_canary_on_the_whole_fleet_makes_it_champion_and_production(world) -> None:  # type: ignore[no-untyped-def]
    engine = world[0].engine
    _aliases(engine, champion="1", production="1", challenger="2")
    deployment_id = _complete(world, DEVICES, RolloutController(world[0]))
    with Session(engine) as session:
        assert aliases.current(session, "m") == {"champion": "2", "production": "2", "challenger": "2"}
        moves = [m for m in aliases.history(session, "m") if m.actor == "controller"]
        assert sorted(m.alias for m in moves) == ["champion", "production"]
        assert all(m.from_version == "1" and f"canary rollout {deployment_id[:8]} completed" in m.reason for m in moves)
        complete = session.exec(select(RolloutDecision).where(RolloutDecision.action == "complete")).one()
        assert complete.detail["promoted"] == ["champion", "production"]


@pytest.mark.parametrize("case", ["part of the fleet", "not the challenger", "policy off"])
def test_anything_else_that_completes_moves_no_alias(world, case: str) -> None:  # type: ignore[no-untyped-def]
    engine = world[0].engine
    _aliases(engine, champion="1", production="1", **({} if case == "not the challenger" else {"challenger": "2"}))
    devices = DEVICES[:2] if case == "part of the fleet" else DEVICES
    _complete(world, devices, RolloutController(world[0], promote_on_canary=case != "policy off"))
    with Session(engine) as session:
        current = aliases.current(session, "m")
        assert current["champion"] == "1" and current["production"] == "1"
        assert all(m.actor == "ana" for m in aliases.history(session, "m"))
