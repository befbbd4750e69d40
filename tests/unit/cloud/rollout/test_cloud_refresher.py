"""The refresher's service path (cloud.rollout.refresher): real database, real key store, the memory
transport, and a clock the test moves; `tick` is called directly, no thread."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll

from cloud import registry, rollout
from cloud.db import TargetStatus
from cloud.db.tables import DeploymentCreate
from cloud.registry.keys import KeyStore
from cloud.rollout import Deployer, Director, FreshnessPolicy, Refresher
from edge_agent.transport import MemoryBroker, MemoryTransport
from protocols.assignment import verify_desired
from protocols.roots import DIRECTOR_ROLE, TARGETS_ROLE, RootOfTrust
from protocols.topics import DEFAULT_FLEET, Channel, device_topic, trust_topic
from protocols.v1 import messages_pb2 as pb

DAY_MS = 86_400_000
POLICY = FreshnessPolicy(assignment_valid_ms=7 * DAY_MS, manifest_valid_ms=90 * DAY_MS)


class Clock:
    def __init__(self) -> None:
        self.ms = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def world(any_engine: Engine, tmp_path: Path, store, make_manifest):  # type: ignore[no-untyped-def]
    keys = KeyStore(tmp_path / "keys")
    keys.init(DEFAULT_FLEET)
    clock = Clock()
    broker = MemoryBroker()
    transport = MemoryTransport(broker)
    transport.start()
    deployer = Deployer(
        any_engine, transport, director=Director.from_keys(keys, assignment_valid_s=7 * 86_400),
        chunk_size_bytes=1024, clock=clock,
    )
    data = {"model.onnx": b"weights"}
    with Session(any_engine) as session:
        registry.register_model_version(
            session, make_manifest("m", data), data, store=store, signer=keys.manifest_signer(), clock=clock
        )
        session.commit()
    enroll(any_engine, "d1", "d2")
    deployment = deployer.deploy(DeploymentCreate(model_id="m", device_ids=["d1", "d2"]))
    return keys, clock, broker, deployer, deployment, Refresher(deployer, keys, POLICY, interval_s=60)


def desired(broker: MemoryBroker, device_id: str) -> pb.DesiredState:
    [(_topic, payload)] = broker.retained_for(device_topic(device_id, Channel.DESIRED, fleet=DEFAULT_FLEET))
    return pb.DesiredState.FromString(payload)


def test_nothing_is_refreshed_while_everything_is_fresh(world) -> None:  # type: ignore[no-untyped-def]
    *_, refresher = world
    assert refresher.tick() == rollout.RefreshReport()


def test_an_assignment_near_expiry_is_reissued_with_the_next_counter(world, any_engine: Engine) -> None:  # type: ignore[no-untyped-def]
    keys, clock, broker, _deployer, deployment, refresher = world
    first = desired(broker, "d1")
    clock.ms += 5 * DAY_MS  # two days left of seven: inside the last third
    assert refresher.tick().devices_reassigned == 2
    again = desired(broker, "d1")
    root = RootOfTrust.pin(keys.chain().roots[0])
    verified = verify_desired(again, root, device_id="d1", last_counter=1, now_ms=clock.ms)
    assert verified.assignment.counter == 2 and verified.assignment.deployment_id == deployment.id
    same_release = pb.Assignment.FromString(first.assignment.assignment).manifest_sha256
    assert verified.assignment.manifest_sha256 == same_release
    assert refresher.tick().devices_reassigned == 0  # fresh again
    with Session(any_engine) as session:
        [t1, _t2] = rollout.targets_of(session, deployment.id)
        assert (t1.generation, t1.status) == (2, TargetStatus.PENDING)  # the target follows the counter


def test_a_device_offline_past_expiry_finds_a_refreshed_assignment(world) -> None:  # type: ignore[no-untyped-def]
    keys, clock, broker, *_rest, refresher = world
    clock.ms += 10 * DAY_MS  # the cloud was down too: the retained assignment has lapsed
    refresher.tick()
    root = RootOfTrust.pin(keys.chain().roots[0])
    assert verify_desired(desired(broker, "d2"), root, device_id="d2", last_counter=1, now_ms=clock.ms)


def test_a_manifest_near_expiry_is_resigned_and_its_devices_reassigned(world, any_engine: Engine) -> None:  # type: ignore[no-untyped-def]
    keys, clock, broker, *_rest, refresher = world
    old = desired(broker, "d1").manifest
    clock.ms += 70 * DAY_MS
    report = refresher.tick()
    assert (report.manifests_resigned, report.devices_reassigned) == (1, 2)
    new = desired(broker, "d1").manifest
    assert new != old
    assert pb.Manifest.FromString(new.manifest).expires_at_ms == clock.ms + 90 * DAY_MS
    root = RootOfTrust.pin(keys.chain().roots[0])
    verified = verify_desired(desired(broker, "d1"), root, device_id="d1", last_counter=1, now_ms=clock.ms)
    assert verified.manifest is not None and verified.manifest.sequence == 1  # the same release
    with Session(any_engine) as session:
        assert registry.signed_manifest_of(registry.get_model_version(session, "m")) == new


@pytest.mark.parametrize("role", [DIRECTOR_ROLE, TARGETS_ROLE, "root"])
def test_a_rotation_while_up_publishes_the_chain_and_reissues_everything(world, role: str) -> None:  # type: ignore[no-untyped-def]
    keys, clock, broker, deployer, *_rest, refresher = world
    device_root = RootOfTrust.pin(keys.chain().roots[0])  # what devices pinned before the rotation
    keys.rotate(role)
    report = refresher.tick()
    assert report.trust_published and report.devices_reassigned == 2
    assert report.manifests_resigned == (1 if role == TARGETS_ROLE else 0)
    [(_topic, chain)] = broker.retained_for(trust_topic(DEFAULT_FLEET))
    assert pb.RootMetadata.FromString(pb.TrustChain.FromString(chain).roots[-1].root).version == 2
    verified = verify_desired(desired(broker, "d1"), device_root, device_id="d1", last_counter=1, now_ms=clock.ms)
    assert verified.root.version == 2
    assert deployer.director.root_version == 2


def test_a_revoked_director_key_is_replaced_in_every_live_assignment(world) -> None:  # type: ignore[no-untyped-def]
    keys, clock, broker, *_rest, refresher = world
    [old] = [k.key_id for k in keys.latest().keys if k.role == DIRECTOR_ROLE]
    keys.revoke(old)
    refresher.tick()
    state = desired(broker, "d2")
    assert state.assignment.key_id != old
    device_root = RootOfTrust.pin(keys.chain().roots[0])
    assert verify_desired(state, device_root, device_id="d2", last_counter=1, now_ms=clock.ms)


def test_a_tick_reads_the_live_assignments_in_one_query_whatever_the_fleet_size(world, any_engine: Engine) -> None:  # type: ignore[no-untyped-def]
    *_, deployer, _deployment, refresher = world
    enroll(any_engine, *(f"d{n}" for n in range(3, 13)))
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=[f"d{n}" for n in range(1, 13)]))
    statements: list[str] = []
    listen = lambda _c, _cur, statement, *_a: statements.append(" ".join(statement.split()))  # noqa: E731
    sqlalchemy.event.listen(any_engine, "before_cursor_execute", listen)
    try:
        assert refresher.tick() == rollout.RefreshReport()
    finally:
        sqlalchemy.event.remove(any_engine, "before_cursor_execute", listen)
    assignment_reads = [s for s in statements if "FROM assignmentrecord" in s or "JOIN assignmentrecord" in s]
    assert len(assignment_reads) == 1  # not one per device (12 here)


def test_an_api_process_follows_a_rotation_without_publishing(world) -> None:  # type: ignore[no-untyped-def]
    """A console API process's deployer (cloud.api.processes) signs with the rotated keys once its follower
    ticks; the trust chain is the core refresher's to publish."""
    from cloud.rollout.refresher import KeyFollower

    keys, _clock, broker, deployer, *_rest = world
    published = len(broker.retained_for(trust_topic(DEFAULT_FLEET)))
    follower = KeyFollower(deployer, keys, interval_s=60)
    assert follower.tick() is False
    keys.rotate(DIRECTOR_ROLE)
    assert follower.tick() is True and deployer.director.root_version == 2
    assert len(broker.retained_for(trust_topic(DEFAULT_FLEET))) == published
