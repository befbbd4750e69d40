from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll

from cloud import fleet, rollout
from cloud.db import DeploymentStatus, TargetStatus
from cloud.db.tables import DeploymentCreate
from cloud.errors import InvalidRequestError, NotFoundError
from cloud.identity.enrollment import create_enrollment_token, enroll_device, is_enrolled, revoke_device
from cloud.monitoring import Ingestor
from cloud.rollout import Deployer, Director, plan
from cloud.rollout.deployments import refresh_status
from cloud.rollout.manifests import ManifestPublisher
from edge_agent.transport import MemoryBroker, MemoryTransport, TransportError
from protocols.assignment import manifest_digest
from protocols.capabilities import MANIFEST_BY_DIGEST
from protocols.topics import Channel, device_topic, manifest_topic
from protocols.v1 import messages_pb2 as pb

CHUNK = 4


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def deployer(any_engine: Engine, broker: MemoryBroker, director: Director) -> Deployer:
    cloud = MemoryTransport(broker)
    cloud.start()
    return Deployer(any_engine, cloud, director=director, chunk_size_bytes=CHUNK)


def desired(broker: MemoryBroker, device_id: str) -> pb.DesiredState | None:
    found = broker.retained_for(device_topic(device_id, Channel.DESIRED))
    return pb.DesiredState.FromString(found[0][1]) if found else None


def report(engine: Engine, device_id: str, **fields: object) -> None:
    """A report from an enrolled device (enrolled here on first use: the cloud drops others' messages)."""
    with Session(engine) as session:
        known = is_enrolled(session, device_id)
    if not known:
        enroll(engine, device_id)
    state = pb.ReportedState(schema_version=1, device_id=device_id, **fields)  # type: ignore[arg-type]
    Ingestor(engine).process([(device_topic(device_id, Channel.REPORTED), state.SerializeToString())])


def statements_during(engine: Engine, action: Callable[[], object]) -> list[str]:
    """The SQL statements the engine ran during action, whitespace folded."""
    statements: list[str] = []
    listen = lambda _c, _cur, statement, *_a: statements.append(" ".join(statement.split()))  # noqa: E731
    sqlalchemy.event.listen(engine, "before_cursor_execute", listen)
    try:
        action()
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", listen)
    return statements


def first_reports(
    device_ids: list[str], labels: Callable[[str], dict[str, str]] | None = None
) -> list[tuple[str, bytes]]:
    """Each device's first ReportedState (with its own labels, if given) as it arrives on its topic."""
    return [
        (device_topic(d, Channel.REPORTED), pb.ReportedState(schema_version=1, device_id=d, ts_ms=5,
                                                              labels=labels(d) if labels else {}).SerializeToString())
        for d in device_ids
    ]  # fmt: skip


def test_deploy_publishes_retained_desired_state_to_the_targets_only(
    any_engine: Engine, deployer: Deployer, broker: MemoryBroker, register
) -> None:
    with Session(any_engine) as session:
        mv = register(session, "m", {"model.onnx": b"0123456789"})
    report(any_engine, "bystander", ts_ms=1)
    enroll(any_engine, "dev-1", "dev-2")
    deployment = deployer.deploy(DeploymentCreate(model_id="m", device_ids=["dev-1", "dev-2"]))
    assert deployment.version == mv.version and deployment.status == DeploymentStatus.IN_PROGRESS
    state = desired(broker, "dev-1")
    assert state is not None
    assert (state.device_id, state.deployment_id, state.generation) == ("dev-1", deployment.id, 1)
    [location] = state.artifacts
    assert (location.size_bytes, location.chunk_size, location.total_chunks) == (10, CHUNK, 3)
    assert pb.Manifest.FromString(state.manifest.manifest).model_id == "m"
    assert desired(broker, "dev-2") is not None
    assert desired(broker, "bystander") is None
    assert len(broker.retained_for("ef/v1/default/dev/+/desired")) == 2
    with Session(any_engine) as session:
        assert fleet.get_device(session, "dev-1").desired_generation == 1  # registered by the deployment
        assert [t.device_id for t in rollout.targets_of(session, deployment.id)] == ["dev-1", "dev-2"]


def test_every_change_bumps_the_generation_and_supersedes_the_old_target(
    any_engine: Engine, deployer: Deployer, broker: MemoryBroker, register
) -> None:
    with Session(any_engine) as session:
        register(session, "m")
        register(session, "m")
    enroll(any_engine, "dev-1")
    first = deployer.deploy(DeploymentCreate(model_id="m", version="1", device_ids=["dev-1"]))
    second = deployer.deploy(DeploymentCreate(model_id="m", device_ids=["dev-1"]))
    state = desired(broker, "dev-1")
    assert state is not None and (state.generation, state.deployment_id) == (2, second.id)
    assert pb.Manifest.FromString(state.manifest.manifest).sequence == 2
    with Session(any_engine) as session:
        assert rollout.get_deployment(session, first.id).status == DeploymentStatus.SUPERSEDED
        assert rollout.get_deployment(session, second.id).status == DeploymentStatus.IN_PROGRESS


def test_a_redeploy_in_batches_supersedes_every_open_target_and_rolls_each_old_deployment_up_once(
    any_engine: Engine, deployer: Deployer, broker: MemoryBroker, register, monkeypatch
) -> None:
    # the plan supersedes, bumps and inserts a batch of ids at a time (2 here), not per device
    monkeypatch.setattr(plan, "_IN_BATCH", 2)
    with Session(any_engine) as session:
        register(session, "m")
        register(session, "m")
    devices = ["a", "b", "c", "d", "e"]
    enroll(any_engine, *devices)
    north = deployer.deploy(DeploymentCreate(model_id="m", version="1", device_ids=["a", "b", "c"]))
    south = deployer.deploy(DeploymentCreate(model_id="m", version="1", device_ids=["c", "d"]))  # c: generation 2
    report(any_engine, "a", ts_ms=2, deployment_id=north.id, desired_generation=1,
           update_state=pb.UPDATE_STATE_ACTIVE)  # fmt: skip
    rolled_up = []
    monkeypatch.setattr(plan, "refresh_status", lambda s, d: rolled_up.append(d) or refresh_status(s, d))
    third = deployer.deploy(DeploymentCreate(model_id="m", version="2", device_ids=devices))
    assert sorted(rolled_up) == sorted([north.id, south.id, third.id])  # each once, whatever the device count
    expected = {"a": 2, "b": 2, "c": 3, "d": 2, "e": 1}
    for device_id, generation in expected.items():
        state = desired(broker, device_id)
        assert state is not None and (state.deployment_id, state.generation) == (third.id, generation)
        assert pb.Assignment.FromString(state.assignment.assignment).counter == generation
    with Session(any_engine) as session:
        assert {d: fleet.get_device(session, d).desired_generation for d in devices} == expected
        old = {t.device_id: t.status for t in rollout.targets_of(session, north.id)}
        assert old == {"a": TargetStatus.SUCCEEDED, "b": TargetStatus.SUPERSEDED, "c": TargetStatus.SUPERSEDED}
        assert rollout.get_deployment(session, north.id).status == DeploymentStatus.SUCCEEDED  # a: its one live
        assert rollout.get_deployment(session, south.id).status == DeploymentStatus.SUPERSEDED
        targets = rollout.targets_of(session, third.id)
        assert {t.device_id: t.generation for t in targets} == expected
        assert {t.status for t in targets} == {TargetStatus.PENDING}


def test_label_selector_and_reported_outcomes(
    any_engine: Engine, deployer: Deployer, broker: MemoryBroker, register
) -> None:
    with Session(any_engine) as session:
        register(session, "m")
    for device_id, site in (("a", "north"), ("b", "north"), ("c", "south")):
        report(any_engine, device_id, ts_ms=1, labels={"site": site})
    deployment = deployer.deploy(DeploymentCreate(model_id="m", labels={"site": "north"}))
    assert desired(broker, "a") and desired(broker, "b") and desired(broker, "c") is None
    report(any_engine, "a", ts_ms=2, deployment_id=deployment.id, desired_generation=1,
           update_state=pb.UPDATE_STATE_ACTIVE)  # fmt: skip
    with Session(any_engine) as session:
        assert rollout.get_deployment(session, deployment.id).status == DeploymentStatus.IN_PROGRESS
    report(any_engine, "b", ts_ms=2, deployment_id=deployment.id, desired_generation=1,
           update_state=pb.UPDATE_STATE_FAILED, last_error=pb.ErrorInfo(code="self_test_failed"))  # fmt: skip
    with Session(any_engine) as session:
        assert rollout.get_deployment(session, deployment.id).status == DeploymentStatus.PARTIAL
        targets = {t.device_id: t for t in rollout.targets_of(session, deployment.id)}
        assert targets["a"].status == TargetStatus.SUCCEEDED
        assert (targets["b"].status, targets["b"].error_code) == (TargetStatus.FAILED, "self_test_failed")


def test_a_batch_of_reports_reads_the_device_rows_and_targets_once_and_rolls_the_deployment_up_once(
    any_engine: Engine, deployer: Deployer, register
) -> None:
    with Session(any_engine) as session:
        register(session, "m")
    devices = [f"d{n}" for n in range(6)]
    enroll(any_engine, *devices)
    deployment = deployer.deploy(DeploymentCreate(model_id="m", device_ids=devices))
    batch = []
    for n, device_id in enumerate(devices):
        state = pb.UPDATE_STATE_FAILED if n == 0 else pb.UPDATE_STATE_ACTIVE
        error = pb.ErrorInfo(code="self_test_failed") if n == 0 else None
        for seq, update_state in enumerate((pb.UPDATE_STATE_DOWNLOADING, state), start=1):  # two reports each
            report_ = pb.ReportedState(schema_version=1, device_id=device_id, seq=seq, ts_ms=seq,
                                       deployment_id=deployment.id, desired_generation=1, update_state=update_state,
                                       last_error=error if seq == 2 else None)  # fmt: skip
            batch.append((device_topic(device_id, Channel.REPORTED), report_.SerializeToString()))
        online = pb.Presence(schema_version=1, device_id=device_id, online=True, ts_ms=3)
        batch.append((device_topic(device_id, Channel.PRESENCE), online.SerializeToString()))
    statements = statements_during(any_engine, lambda: Ingestor(any_engine).process(batch))
    device_reads = [s for s in statements if s.startswith("SELECT device.")]
    # (the roll-up's probe for an unfinished target, LIMIT 1, is not a read of the batch's targets)
    target_reads = [s for s in statements if s.startswith("SELECT deploymenttarget.") and " LIMIT " not in s]
    roll_ups = [s for s in statements if s.startswith("SELECT DISTINCT deploymenttarget.status")]
    assert (len(device_reads), len(target_reads), len(roll_ups)) == (1, 1, 1)  # not one per message
    row_writes = [s for s in statements if s.startswith(("UPDATE device ", "UPDATE deploymenttarget "))]
    assert len(row_writes) <= 4, row_writes  # rows written together at the end, not a flush per message (18)
    with Session(any_engine) as session:
        assert rollout.get_deployment(session, deployment.id).status == DeploymentStatus.PARTIAL
        targets = {t.device_id: t for t in rollout.targets_of(session, deployment.id)}
        assert (targets["d0"].status, targets["d0"].error_code) == (TargetStatus.FAILED, "self_test_failed")
        assert {targets[d].status for d in devices[1:]} == {TargetStatus.SUCCEEDED}
        rows = [fleet.get_device(session, d) for d in devices]
        assert all(d.online and d.reported_seq == 2 for d in rows)
        assert [d.update_state for d in rows] == ["failed"] + ["active"] * 5


def test_a_deployment_with_unfinished_targets_is_rolled_up_without_reading_every_targets_status(
    any_engine: Engine, deployer: Deployer, register
) -> None:
    """While a target is unfinished the roll-up is "in progress" whatever the others say: ingestion finds one
    such target and stops, rather than reading the distinct statuses of all (a scan of every target per
    batch); once none is left, they are read and decide."""
    with Session(any_engine) as session:
        register(session, "m")
    devices = ["d0", "d1", "d2"]
    enroll(any_engine, *devices)
    deployment = deployer.deploy(DeploymentCreate(model_id="m", device_ids=devices))

    def answers(device_ids: list[str], update_state: int) -> list[tuple[str, bytes]]:
        return [(device_topic(d, Channel.REPORTED), pb.ReportedState(
            schema_version=1, device_id=d, seq=update_state, ts_ms=update_state, deployment_id=deployment.id,
            desired_generation=1, update_state=update_state).SerializeToString()) for d in device_ids]  # fmt: skip

    def roll_ups(batch: list[tuple[str, bytes]]) -> list[str]:
        statements = statements_during(any_engine, lambda: Ingestor(any_engine).process(batch))
        return [s for s in statements if s.startswith("SELECT DISTINCT deploymenttarget.status")]

    assert roll_ups(answers(devices[:2], pb.UPDATE_STATE_ACTIVE)) == []  # d2 is still pending
    with Session(any_engine) as session:
        assert rollout.get_deployment(session, deployment.id).status == DeploymentStatus.IN_PROGRESS
    assert len(roll_ups(answers(devices[2:], pb.UPDATE_STATE_FAILED))) == 1
    with Session(any_engine) as session:
        assert rollout.get_deployment(session, deployment.id).status == DeploymentStatus.PARTIAL


def test_a_report_for_an_older_generation_does_not_move_the_target(
    any_engine: Engine, deployer: Deployer, register
) -> None:
    with Session(any_engine) as session:
        register(session, "m")
    enroll(any_engine, "a")
    deployment = deployer.deploy(DeploymentCreate(model_id="m", device_ids=["a"]))
    report(any_engine, "a", ts_ms=2, deployment_id=deployment.id, desired_generation=0,
           update_state=pb.UPDATE_STATE_ACTIVE)  # fmt: skip
    with Session(any_engine) as session:
        assert rollout.targets_of(session, deployment.id)[0].status == TargetStatus.PENDING


def test_a_device_that_appears_later_gets_the_matching_label_deployment(
    any_engine: Engine, broker: MemoryBroker, deployer: Deployer, register
) -> None:
    with Session(any_engine) as session:
        register(session, "m")
    deployment = deployer.deploy(DeploymentCreate(model_id="m", labels={"site": "north"}, wait_for_devices=True))
    assert not broker.retained_for("ef/v1/default/dev/+/desired")
    enroll(any_engine, "late", "other")  # enrolled without labels: their first reports bring them
    late = pb.ReportedState(schema_version=1, device_id="late", ts_ms=5, labels={"site": "north"})
    other = pb.ReportedState(schema_version=1, device_id="other", ts_ms=5, labels={"site": "south"})
    Ingestor(any_engine, deployer=deployer).process(
        [(device_topic(d.device_id, Channel.REPORTED), d.SerializeToString()) for d in (late, other)]
    )
    state = desired(broker, "late")
    assert state is not None and (state.deployment_id, state.generation) == (deployment.id, 1)
    assert desired(broker, "other") is None
    # a second report from the same device changes nothing
    Ingestor(any_engine, deployer=deployer).process(
        [(device_topic("late", Channel.REPORTED), late.SerializeToString())]
    )
    assert desired(broker, "late").generation == 1  # type: ignore[union-attr]


def test_first_reports_without_an_open_label_deployment_cost_one_query_in_all(
    any_engine: Engine, broker: MemoryBroker, deployer: Deployer, register
) -> None:
    with Session(any_engine) as session:
        register(session, "m")
    enroll(any_engine, "old")
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["old"]))  # by ids: nobody joins it by labels
    devices = [f"d{n:02d}" for n in range(30)]
    enroll(any_engine, *devices, labels={"site": "north"})
    ingestor = Ingestor(any_engine, deployer=deployer)
    statements = statements_during(any_engine, lambda: ingestor.process(first_reports(devices)))
    deployment_reads = [s for s in statements if s.startswith("SELECT deployment.")]
    device_reads = [s for s in statements if s.startswith("SELECT device.")]
    assert (len(deployment_reads), len(device_reads)) == (1, 1)  # one reconcile per device: (30, 31)
    assert ingestor.stats.device_updates == 30 and desired(broker, "d00") is None


def test_a_batch_of_first_reports_joins_the_matching_devices_to_the_label_deployment_at_once(
    any_engine: Engine, broker: MemoryBroker, deployer: Deployer, register
) -> None:
    with Session(any_engine) as session:
        register(session, "m")
    north = deployer.deploy(DeploymentCreate(model_id="m", labels={"site": "north"}, wait_for_devices=True))
    site = lambda d: {"site": "north" if int(d[1:]) % 2 == 0 else "south"}  # noqa: E731

    def first_batch(devices: list[str]) -> list[str]:
        enroll(any_engine, *devices)  # without labels: their first reports bring them
        return statements_during(any_engine, lambda: Ingestor(any_engine, deployer=deployer).process(
            first_reports(devices, site)))  # fmt: skip

    few, many = [f"a{n}" for n in range(4)], [f"b{n}" for n in range(24)]
    few_statements, many_statements = first_batch(few), first_batch(many)
    assert len(many_statements) == len(few_statements), many_statements  # not a transaction per device
    joined = {d for d in few + many if site(d)["site"] == "north"}
    for device_id in few + many:
        state = desired(broker, device_id)
        if device_id in joined:
            assert state is not None and (state.deployment_id, state.generation) == (north.id, 1)
        else:
            assert state is None
    with Session(any_engine) as session:
        assert {t.device_id for t in rollout.targets_of(session, north.id)} == joined
    # the same reports again (a redelivery), or a newer deployment by ids: nobody joins north again
    Ingestor(any_engine, deployer=deployer).process(first_reports(many, site))
    newer = deployer.deploy(DeploymentCreate(model_id="m", device_ids=["b0"]))
    with Session(any_engine) as session:
        device = fleet.get_device(session, "b0")
        device.labels, device.reported_ts_ms = {}, 0  # as if relabelled: b0 is reconciled again
        session.add(device)
        session.commit()
    Ingestor(any_engine, deployer=deployer).process(first_reports(["b0"], site))
    assert desired(broker, "b0").deployment_id == newer.id  # type: ignore[union-attr]
    assert desired(broker, "b2").generation == 1  # type: ignore[union-attr]


@pytest.mark.postgres
def test_two_clouds_taking_in_the_same_first_reports_send_each_device_its_label_deployment_once(
    postgres_url: str, register, director: Director
) -> None:
    """Two cloud processes on one broker without a share group both take in every report: each device's
    first report is reconciled by both, at the same time. The device is targeted and sent its desired
    state once, and neither transaction deadlocks."""
    import threading

    from cloud.db import create_tables, make_engine

    engines = [make_engine(postgres_url) for _ in range(2)]
    create_tables(engines[0])
    broker = MemoryBroker()
    sent: list[str] = []
    watcher = MemoryTransport(broker)
    watcher.set_message_handler(lambda topic, _payload: sent.append(topic))
    watcher.subscribe("ef/v1/default/dev/+/desired")
    watcher.start()
    deployers = []
    for engine in engines:
        transport = MemoryTransport(broker)
        transport.start()
        deployers.append(Deployer(engine, transport, director=director, chunk_size_bytes=CHUNK))
    try:
        with Session(engines[0]) as session:
            register(session, "m")
        north = deployers[0].deploy(DeploymentCreate(model_id="m", labels={"site": "north"}, wait_for_devices=True))
        devices = [f"d{n:02d}" for n in range(40)]
        enroll(engines[0], *devices, labels={"site": "north"})
        reports = first_reports(devices)
        clouds = [threading.Thread(target=Ingestor(e, deployer=d).process, args=(reports,))
                  for e, d in zip(engines, deployers, strict=True)]  # fmt: skip
        for cloud in clouds:
            cloud.start()
        for cloud in clouds:
            cloud.join(timeout=60)
        assert not any(cloud.is_alive() for cloud in clouds)
        assert sorted(sent) == sorted(device_topic(d, Channel.DESIRED) for d in devices)  # each once
        with Session(engines[0]) as session:
            targets = rollout.targets_of(session, north.id)
            assert sorted(t.device_id for t in targets) == devices and {t.generation for t in targets} == {1}
    finally:
        for engine in engines:
            engine.dispose()


def test_republish_restores_lost_retained_state_without_a_new_generation(
    any_engine: Engine, deployer: Deployer, register
) -> None:
    with Session(any_engine) as session:
        register(session, "m")
    enroll(any_engine, "a", "b")
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["a", "b"]))
    fresh = MemoryBroker()  # a restarted broker that kept nothing
    deployer.publisher = transport = MemoryTransport(fresh)
    transport.start()
    assert deployer.republish_all() == 2
    assert desired(fresh, "a").generation == 1  # type: ignore[union-attr]


def test_bad_deployment_requests_are_refused(any_engine: Engine, deployer: Deployer, register) -> None:
    with Session(any_engine) as session:
        register(session, "m")
    with pytest.raises(NotFoundError):
        deployer.deploy(DeploymentCreate(model_id="nope", device_ids=["a"]))
    with pytest.raises(NotFoundError):
        deployer.deploy(DeploymentCreate(model_id="m", version="42", device_ids=["a"]))
    with pytest.raises(InvalidRequestError, match="device_ids"):
        deployer.deploy(DeploymentCreate(model_id="m"))
    with pytest.raises(ValidationError, match="device_ids"):  # the request schema refuses it first
        DeploymentCreate(model_id="m", device_ids=["a/#"])
    with pytest.raises(InvalidRequestError, match="invalid device id"):  # and the planner too, unvalidated
        deployer.deploy(DeploymentCreate.model_construct(model_id="m", device_ids=["a/#"]))
    with pytest.raises(InvalidRequestError, match="not supported"):
        deployer.deploy(DeploymentCreate(model_id="m", device_ids=["a"], strategy="canary"))
    with pytest.raises(InvalidRequestError, match=r"not enrolled: a, typo-01 \("):
        deployer.deploy(DeploymentCreate(model_id="m", device_ids=["typo-01", "a"]))
    with pytest.raises(InvalidRequestError, match="no device matches the labels rack=7,site=lab"):
        deployer.deploy(DeploymentCreate(model_id="m", labels={"site": "lab", "rack": "7"}))
    with Session(any_engine) as session:
        assert rollout.list_deployments(session) == []
        assert fleet.list_devices(session) == []  # a refused id leaves no device row behind


def test_a_device_named_by_an_unspent_token_may_be_targeted_before_it_enrolls(
    any_engine: Engine, deployer: Deployer, broker: MemoryBroker, register
) -> None:
    with Session(any_engine) as session:
        register(session, "m")
        create_enrollment_token(session, device_id="coming")
        expired, _ = create_enrollment_token(session, device_id="too-late", ttl_s=60)
        expired.expires_at_ms = 1
        session.add(expired)
        session.commit()
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["coming"]))
    assert desired(broker, "coming") is not None  # retained, waiting for the device
    with pytest.raises(InvalidRequestError, match="not enrolled: too-late"):
        deployer.deploy(DeploymentCreate(model_id="m", device_ids=["too-late"]))
    with Session(any_engine) as session:
        revoke_device(session, "coming")  # no credential yet: the token still awaits it
        enroll_device(session, "gone")
        revoke_device(session, "gone")
        session.commit()
    with pytest.raises(InvalidRequestError, match="not enrolled: gone"):
        deployer.deploy(DeploymentCreate(model_id="m", device_ids=["gone"]))


@pytest.mark.postgres
def test_a_deploy_that_deadlocks_with_another_writer_is_retried(
    postgres_url: str, broker: MemoryBroker, register, director: Director
) -> None:
    """Ingestion updates device rows while a deploy updates them too; PostgreSQL breaks a lock cycle by
    aborting one transaction. Here the deploy waits first, so it is the one aborted: it must retry."""
    import threading
    import time

    from sqlalchemy import text

    from cloud.db import create_tables, make_engine

    engine = make_engine(postgres_url)
    create_tables(engine)
    try:
        with Session(engine) as session:
            register(session, "m", {"model.onnx": b"0123456789"})
        for device_id in ("d1", "d2"):
            report(engine, device_id, ts_ms=1)
        cloud = MemoryTransport(broker)
        cloud.start()
        deployer = Deployer(engine, cloud, director=director, chunk_size_bytes=CHUNK)
        result: list[object] = []
        with engine.connect() as other:
            other.execute(text("SET deadlock_timeout = '3s'"))  # let the deploy be the one that detects it
            other.execute(text("UPDATE device SET agent_version = 'x' WHERE id = 'd2'"))  # holds d2
            worker = threading.Thread(
                target=lambda: result.append(deployer.deploy(DeploymentCreate(model_id="m", device_ids=["d1", "d2"])))
            )
            worker.start()  # locks d1, then waits for d2
            time.sleep(0.5)
            other.execute(text("UPDATE device SET agent_version = 'x' WHERE id = 'd1'"))  # the cycle
            other.commit()
            worker.join(timeout=30)
        assert result and getattr(result[0], "status", None) == DeploymentStatus.IN_PROGRESS
        assert desired(broker, "d1") is not None and desired(broker, "d2") is not None
    finally:
        engine.dispose()

def test_two_deploys_waiting_for_the_same_device_row_each_see_what_the_other_committed(
    postgres_url: str, broker: MemoryBroker, register, director: Director
) -> None:
    """Two deploys to a device whose row another transaction holds: the one that gets it second supersedes the
    first one's target and replaces its assignment record, as committed, not as it read them before waiting
    (a record read then was inserted twice: the second deploy failed on its unique key)."""
    import threading
    import time

    from sqlalchemy import text

    from cloud.db import create_tables, make_engine
    from cloud.db.tables import AssignmentRecord

    engine = make_engine(postgres_url)
    create_tables(engine)
    try:
        with Session(engine) as session:
            register(session, "m", {"model.onnx": b"0123456789"})
            register(session, "m", {"model.onnx": b"9876543210"})
        report(engine, "d1", ts_ms=1)
        cloud = MemoryTransport(broker)
        cloud.start()
        deployer = Deployer(engine, cloud, director=director, chunk_size_bytes=CHUNK)
        done: list[str] = []

        def deploy(version: str) -> None:
            done.append(deployer.deploy(DeploymentCreate(model_id="m", version=version, device_ids=["d1"])).id)

        with engine.connect() as other:
            other.execute(text("UPDATE device SET agent_version = 'x' WHERE id = 'd1'"))  # holds d1
            workers = [threading.Thread(target=deploy, args=(version,)) for version in ("1", "2")]
            for worker in workers:
                worker.start()
            time.sleep(1.0)  # both have read what they read before waiting for d1
            other.commit()
            for worker in workers:
                worker.join(timeout=30)
        assert len(done) == 2, "a deploy failed"
        with Session(engine) as session:
            device = fleet.get_device(session, "d1")
            assert device.desired_generation == 2
            last, first = device.deployment_id, next(d for d in done if d != device.deployment_id)
            assert [t.status for t in rollout.targets_of(session, first)] == [TargetStatus.SUPERSEDED]
            assert [(t.status, t.generation) for t in rollout.targets_of(session, last)] == [(TargetStatus.PENDING, 2)]
            record = session.get(AssignmentRecord, "d1")
            assert record is not None and (record.deployment_id, record.counter) == (last, 2)
        assert desired(broker, "d1").generation == 2  # type: ignore[union-attr]
    finally:
        engine.dispose()


# ------------------------------------------------------- one manifest per fleet (cloud.rollout.manifests)
# Devices whose agent reads manifests by digest get desired states without one, the manifest is retained once
# on its fleet-wide topic; every other device, and every device when that topic cannot be written, gets it
# inside its desired state as before.


class CountingTransport(MemoryTransport):
    """A cloud transport that counts what it publishes per topic, and can refuse the manifest topics."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.sent: dict[str, int] = {}
        self.refuse_manifests = False

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        if self.refuse_manifests and "/art/manifest/" in topic:
            raise TransportError("not connected")
        self.sent[topic] = self.sent.get(topic, 0) + 1
        return super().publish(topic, payload, qos=qos, retain=retain)


@pytest.fixture
def counting(broker: MemoryBroker) -> CountingTransport:
    cloud = CountingTransport(broker)
    cloud.start()
    return cloud


def _deployer(engine: Engine, transport: CountingTransport, director: Director, *, by_digest: bool = True) -> Deployer:
    manifests = ManifestPublisher(transport, fleet=director.fleet) if by_digest else None
    return Deployer(engine, transport, director=director, chunk_size_bytes=CHUNK, manifests=manifests)


@pytest.fixture
def mixed_fleet(any_engine: Engine, register: Any) -> Engine:
    """Model "m" registered; new-0..2 report the capability, old-0 names none (an older agent)."""
    with Session(any_engine) as session:
        register(session, "m", {"model.onnx": b"0123456789"})
    for n in range(3):
        report(any_engine, f"new-{n}", ts_ms=1, capabilities=[MANIFEST_BY_DIGEST])
    report(any_engine, "old-0", ts_ms=1)
    return any_engine


def _assigned_digest(state: pb.DesiredState) -> str:
    return pb.Assignment.FromString(state.assignment.assignment).manifest_sha256


def test_capable_devices_get_small_desired_states_and_the_manifest_is_retained_once(
    mixed_fleet: Engine, broker: MemoryBroker, counting: CountingTransport, director: Director
) -> None:
    any_engine = mixed_fleet
    ids = ["new-0", "new-1", "new-2", "old-0"]
    deployer = _deployer(any_engine, counting, director)
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=ids))

    states = {d: desired(broker, d) for d in ids}
    assert all(s is not None for s in states.values())
    old = states["old-0"]
    assert old is not None and old.HasField("manifest")  # an older agent is sent what it always was
    digest = manifest_digest(old.manifest)
    topic = manifest_topic(digest, fleet=director.fleet)
    for device_id in ("new-0", "new-1", "new-2"):
        state = states[device_id]
        assert state is not None and not state.HasField("manifest"), device_id
        assert _assigned_digest(state) == digest  # the signed assignment names what the topic holds
        assert state.ByteSize() < old.ByteSize() - old.manifest.ByteSize() + 8
    [(_, retained)] = broker.retained_for(topic)
    assert retained == old.manifest.SerializeToString()
    assert counting.sent[topic] == 1  # once for the fleet, not once per device

    deployer.deploy(DeploymentCreate(model_id="m", device_ids=ids))  # the same release again: not re-sent
    assert counting.sent[topic] == 1
    deployer.republish_all()  # a broker that lost its retained messages gets it again
    assert counting.sent[topic] == 2


def test_without_the_fleet_wide_topic_every_desired_state_carries_its_manifest(
    mixed_fleet: Engine, broker: MemoryBroker, counting: CountingTransport, director: Director
) -> None:
    any_engine = mixed_fleet
    ids = ["new-0", "new-1", "old-0"]
    _deployer(any_engine, counting, director, by_digest=False).deploy(DeploymentCreate(model_id="m", device_ids=ids))
    assert all((s := desired(broker, d)) is not None and s.HasField("manifest") for d in ids)

    counting.refuse_manifests = True  # the topic cannot be written: the manifest goes inside instead
    _deployer(any_engine, counting, director).deploy(DeploymentCreate(model_id="m", device_ids=ids))
    assert all((s := desired(broker, d)) is not None and s.HasField("manifest") and s.generation == 2 for d in ids)


def test_a_device_whose_agent_no_longer_names_the_capability_gets_the_manifest_again(
    any_engine: Engine, broker: MemoryBroker, counting: CountingTransport, director: Director, register: Any
) -> None:
    with Session(any_engine) as session:
        register(session, "m", {"model.onnx": b"0123456789"})
    report(any_engine, "pi-1", ts_ms=1, capabilities=[MANIFEST_BY_DIGEST])
    deployer = _deployer(any_engine, counting, director)
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["pi-1"]))
    assert (state := desired(broker, "pi-1")) is not None and not state.HasField("manifest")
    report(any_engine, "pi-1", ts_ms=2)  # the agent was downgraded
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["pi-1"]))
    assert (state := desired(broker, "pi-1")) is not None and state.HasField("manifest")


def test_deploy_in_a_callers_session_leaves_its_loaded_device_rows_current(
    any_engine: Engine, deployer: Deployer, broker: MemoryBroker, register
) -> None:
    """The devices' deployment and generation are written by one UPDATE, not by the ORM: rows the caller's
    session holds say what the database says, then and after its commit."""
    with Session(any_engine) as session:
        register(session, "m", {"model.onnx": b"0123456789"})
    enroll(any_engine, "dev-1", "dev-2")
    with Session(any_engine, expire_on_commit=False) as session:
        loaded = fleet.get_device(session, "dev-1")  # the caller read it before deploying
        first = deployer.deploy(DeploymentCreate(model_id="m", device_ids=["dev-1", "dev-2"]), session)
        second = deployer.deploy(DeploymentCreate(model_id="m", device_ids=["dev-1"]), session)
        assert (loaded.deployment_id, loaded.desired_generation) == (second.id, 2)
        assert fleet.get_device(session, "dev-2").deployment_id == first.id
        session.commit()
    with Session(any_engine) as fresh:
        assert (fleet.get_device(fresh, "dev-1").deployment_id, fleet.get_device(fresh, "dev-1").desired_generation) \
            == (second.id, 2)  # fmt: skip
        assert (fleet.get_device(fresh, "dev-2").deployment_id, fleet.get_device(fresh, "dev-2").desired_generation) \
            == (first.id, 1)  # fmt: skip
    assert desired(broker, "dev-1").generation == 2  # type: ignore[union-attr]
