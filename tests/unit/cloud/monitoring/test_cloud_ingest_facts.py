"""DeviceFacts from a ReportedState land in Device.facts, show in the API's device views, and give the
staged rollout planner the device's architecture."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll

from cloud import fleet
from cloud.db.tables import DevicePublic
from cloud.monitoring import Ingestor
from cloud.rollout.staged import candidates
from cloud.rollout.waves import Requirements, SkipReason, Strategy, plan_waves
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

NOW_MS = 1_700_000_000_000


@pytest.fixture(autouse=True)
def _enrolled(any_engine: Engine) -> None:
    enroll(any_engine, "pi-1", "old-1")


def _report(device_id: str, seq: int, facts: pb.DeviceFacts | None) -> tuple[str, bytes]:
    state = pb.ReportedState(schema_version=1, device_id=device_id, seq=seq, ts_ms=NOW_MS + seq, runtimes=["tflite"])
    if facts is not None:
        state.facts.CopyFrom(facts)
    return device_topic(device_id, Channel.REPORTED), state.SerializeToString()


def test_facts_are_stored_shown_and_feed_the_planner(any_engine: Engine) -> None:
    facts = pb.DeviceFacts(
        architecture="aarch64",
        os="Debian GNU/Linux 12 (bookworm)",
        python_version="3.11.2",
        runtimes=[pb.RuntimeInfo(name="tflite", version="2.3.0")],
        cpu_count=4,
        cpu_model="Raspberry Pi 4 Model B Rev 1.4",
        memory_total_bytes=4_000_000_000,
        memory_available_bytes=3_000_000_000,
        temperature_c=51.5,
        throttled="0x50005",
        disk_free_bytes=10_000_000_000,
    )
    ingestor = Ingestor(any_engine, clock=lambda: NOW_MS)
    ingestor.process([_report("pi-1", 1, facts), _report("old-1", 1, None)])
    ingestor.process([_report("pi-1", 2, None)])  # a report without facts keeps the known ones
    with Session(any_engine) as session:
        shown = DevicePublic.model_validate(fleet.get_device(session, "pi-1")).model_dump()
        assert shown["facts"] == {
            "architecture": "aarch64",
            "os": "Debian GNU/Linux 12 (bookworm)",
            "python_version": "3.11.2",
            "runtimes": {"tflite": "2.3.0"},
            "cpu_count": 4,
            "cpu_model": "Raspberry Pi 4 Model B Rev 1.4",
            "memory_total_bytes": 4_000_000_000,
            "memory_available_bytes": 3_000_000_000,
            "temperature_c": 51.5,
            "throttled": "0x50005",
            "disk_free_bytes": 10_000_000_000,
        }
        assert fleet.get_device(session, "old-1").facts == {}
        found = {c.device_id: c for c in candidates(session, ["pi-1", "old-1"])}
    assert found["pi-1"].architecture == "aarch64" and found["pi-1"].runtimes == ("tflite",)
    assert found["old-1"].architecture == ""
    plan = plan_waves("r", list(found.values()), Strategy(), Requirements(architectures=frozenset({"x86_64"})))
    assert plan.skipped == {"pi-1": SkipReason.WRONG_ARCH}  # unknown architecture: assumed able
    plan = plan_waves("r", list(found.values()), Strategy(), Requirements(runtimes=frozenset({"onnxruntime"})))
    assert plan.skipped == {"pi-1": SkipReason.NO_RUNTIME, "old-1": SkipReason.NO_RUNTIME}


def _window(device_id: str, seq: int, end_ms: int, drops: pb.SpoolDrops | None) -> tuple[str, bytes]:
    window = pb.TelemetryWindow(
        schema_version=1, device_id=device_id, seq=seq, window_start_ms=end_ms - 60_000, window_end_ms=end_ms
    )
    if drops is not None:
        window.spool_dropped.CopyFrom(drops)
    return device_topic(device_id, Channel.TELEMETRY), window.SerializeToString()


def test_spool_drop_counts_are_kept_newest_window_first_and_shown(any_engine: Engine) -> None:
    ingestor = Ingestor(any_engine, clock=lambda: NOW_MS)
    ingestor.process([_window("pi-1", 1, NOW_MS - 120_000, pb.SpoolDrops(samples=40, telemetry=2))])
    ingestor.process([
        _window("pi-1", 3, NOW_MS, pb.SpoolDrops(samples=90, telemetry=3, events=1)),
        _window("pi-1", 2, NOW_MS - 60_000, pb.SpoolDrops(samples=60, telemetry=3)),  # late, older: ignored
        _window("pi-1", 4, NOW_MS, None),  # nothing dropped (the agent leaves the field out): keep the totals
        _window("old-1", 1, NOW_MS, None),
    ])  # fmt: skip
    with Session(any_engine) as session:
        shown = DevicePublic.model_validate(fleet.get_device(session, "pi-1")).model_dump()
        assert shown["spool_dropped"] == {"events": 1, "telemetry": 3, "samples": 90, "as_of_ms": NOW_MS}
        assert fleet.get_device(session, "old-1").spool_dropped == {}
