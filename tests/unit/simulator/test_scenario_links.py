"""Scenario files with network profiles, device faults, label shift and delayed labels: they parse, each
mistake is named; and the pure parts behind them (class prior, delayed labels, full disk, skewed clock,
the event tap) do what the scenario promises."""

from __future__ import annotations

import errno

import numpy as np
import pytest
from test_scenario import MINIMAL, ROOT  # the smallest valid scenario, shared with the parser's tests

from edge_agent.store import MemoryModelStore
from edge_agent.transport import MemoryBroker, MemoryTransport
from protocols.v1 import messages_pb2 as pb
from simulator.data import DataStream
from simulator.faults import FaultHooks
from simulator.labels import DelayedLabels
from simulator.netem import PROFILES
from simulator.scenario import LabelShift, ScenarioError, load_scenario, parse_scenario


def test_the_rough_links_example_parses() -> None:
    scenario = load_scenario(ROOT / "examples/scenarios/rough-links.toml")
    assert scenario.shaped and scenario.size == 18
    assert {g.network for g in scenario.groups} == {"4g", "3g", "vsat-rural", "intermittent"}
    vsat = scenario.profile("vsat-rural")
    assert vsat.latency_ms == PROFILES["satellite"].latency_ms and vsat.bandwidth_kbps == 256
    assert vsat.disconnects_per_hour == 0
    kinds = {type(e).__name__ for e in scenario.events}
    assert {"ClockSkew", "DiskFull", "Corrupt", "LabelShift", "BrokerRestart"} <= kinds
    assert scenario.group("pump").data.label_delay_s == 5 and scenario.group("pump").data.labelled == 0.5


def test_a_scenario_without_profiles_or_tampering_is_not_shaped() -> None:
    assert not parse_scenario(MINIMAL).shaped
    assert parse_scenario(MINIMAL + '[[events]]\nat_s = 1\naction = "corrupt"\n').shaped


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[groups]]\nname = "b"\ncount = 1\nnetwork = "5g"\n', "groups[1].network: no profile named '5g'"),
        ('[networks.x]\nbase = "dialup"\n', "networks.x.base: no profile named 'dialup'"),
        ("[networks.x]\nloss = 0.9\n", "networks.x.loss: Input should be less than or equal to 0.5"),
        ("[networks.x]\nmtu = 1500\n", "networks.x.mtu: Extra inputs are not permitted"),
        ('[[events]]\nat_s = 1\naction = "disk_full"\ndevices = 4\n', "events[0].devices: 4 but the group has only 3"),
        ('[[events]]\nat_s = 1\naction = "clock_skew"\n', "events[0].offset_s: Field required"),
        ('[[events]]\nat_s = 1\naction = "corrupt"\nchunks = 0\n', "events[0].chunks: Input should be greater"),
        ('[[events]]\nat_s = 1\naction = "label_shift"\nprior = {}\n', "events[0].prior: Dictionary should have"),
        ('[[events]]\nat_s = 1\naction = "label_shift"\nprior = { "1" = -2 }\n', "weights must not be negative"),
        ('[[groups]]\nname = "b"\ncount = 1\ndata = { labelled = 2 }\n', "groups[1].data.labelled: Input should"),
    ],
)
def test_mistakes_are_named(extra: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(MINIMAL + extra, "s.toml")
    assert message in str(caught.value), str(caught.value)


def test_a_custom_network_is_built_on_its_base() -> None:
    scenario = parse_scenario(MINIMAL.replace('count = 3', 'count = 3\nnetwork = "mine"')
                              + '[networks.mine]\nbase = "3g"\nlatency_ms = 400\n')  # fmt: skip
    mine = scenario.profile("mine")
    assert mine.latency_ms == 400 and mine.bandwidth_kbps == PROFILES["3g"].bandwidth_kbps
    assert scenario.profile("wired") == PROFILES["wired"]


def test_label_shift_weights_move_with_its_kind() -> None:
    sudden = LabelShift(at_s=0, action="label_shift", prior={"1": 5.0})
    gradual = LabelShift(at_s=0, action="label_shift", prior={"1": 5.0}, kind="gradual", ramp_s=4)
    assert sudden.weights(0) == {"1": 5.0}
    assert [gradual.weights(t)["1"] for t in (0, 2, 4, 8)] == [1.0, 3.0, 5.0, 5.0]


def test_class_weights_shift_the_prior_and_leave_the_rows_alone() -> None:
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.array([0] * 10 + [1] * 10)
    stream = DataStream(X, y, seed=1)
    _x, labels = stream.batch(4000)
    assert 0.45 < (labels == 1).mean() < 0.55
    stream.class_weights = {"1": 9.0}
    rows, labels = stream.batch(4000)
    assert 0.85 < (labels == 1).mean() < 0.95
    assert ((rows[:, 0] >= 20) == (labels == 1)).all()  # each row still comes with its own label
    stream.class_weights = {"0": 0.0, "1": 0.0}
    with pytest.raises(ValueError, match="leave no class"):
        stream.batch(1)


def test_delayed_labels_follow_sampled_rows_and_come_due_after_the_delay() -> None:
    labels = DelayedLabels({"d1": 2.0}, {"d1": 1.0}, seed=0)
    rows = [np.full((1, 3), n, dtype=np.float32) for n in range(3)]
    for n, row in enumerate(rows):
        labels.predicted("d1", row, str(n), at=100.0 + n)
    batch = pb.SampleBatch(device_id="d1", seq=7, samples=[
        pb.Sample(input=rows[2].ravel().tolist(), prediction="2"),
        pb.Sample(input=[9.0, 9.0, 9.0], prediction="x"),  # never predicted (or forgotten): no label
        pb.Sample(input=rows[0].ravel().tolist(), prediction="0", prediction_id="mine"),
    ])  # fmt: skip
    labels.sampled("d1", batch)
    labels.sampled("d2", batch)  # a device without delayed labels: ignored
    assert (labels.sampled_rows, labels.unmatched, labels.queued, labels.owed) == (3, 1, 2, 2)
    assert labels.due(now=101.9) == {}
    first = labels.due(now=102.0)["d1"]
    assert [(f.prediction_id, f.label) for f in first.items] == [("mine", "0")] and first.seq == 1
    second = labels.due(now=110.0)["d1"]
    assert [(f.prediction_id, f.label) for f in second.items] == [("7:0", "2")] and second.seq == 2
    assert labels.owed == 0 and labels.delivered == 2


def test_only_a_share_of_sampled_predictions_gets_labelled() -> None:
    labels = DelayedLabels({"d1": 0.0}, {"d1": 0.25}, seed=3)
    rows = [np.array([[float(n)]], dtype=np.float32) for n in range(400)]
    for row in rows:
        labels.predicted("d1", row, "x", at=0.0)
    labels.sampled("d1", pb.SampleBatch(seq=1, samples=[pb.Sample(input=r.ravel().tolist()) for r in rows]))
    assert 60 < labels.queued < 140


def test_a_full_disk_refuses_model_bytes_but_keeps_the_journal_and_frees_up() -> None:
    hooks = FaultHooks()
    store = hooks.store("d1", MemoryModelStore())
    sha = "a" * 64
    store.begin_download(sha, 4)
    hooks.fill_disk("d1")
    with pytest.raises(OSError) as caught:
        store.write_chunk(sha, 0, 0, b"abcd")
    assert caught.value.errno == errno.ENOSPC and "No space left on device" in str(caught.value)
    with pytest.raises(OSError):
        hooks.store("d1", MemoryModelStore()).begin_download(sha, 4)  # a restarted agent: the same disk
    hooks.fill_disk("d1", False)
    store.write_chunk(sha, 0, 0, b"abcd")
    assert store.received_chunks(sha) == {0} and hooks.disks["d1"].refusals == 2


def test_a_skewed_clock_moves_wall_time_only() -> None:
    hooks = FaultHooks()
    clock = hooks.clock("d1")
    assert clock is not None
    before = clock.now()
    hooks.skew("d1", 8 * 86_400)
    after = clock.now()
    assert after.wall_ms - before.wall_ms >= 8 * 86_400_000 - 1000
    assert 0 <= after.mono_s - before.mono_s < 1  # timeouts do not jump
    assert hooks.clock("d1") is clock  # a restarted agent keeps its bad clock


def test_the_tap_notes_error_events_and_shows_sample_batches() -> None:
    seen: list[tuple[str, int]] = []
    hooks = FaultHooks()
    hooks.on_samples = lambda device, batch: seen.append((device, batch.seq))
    broker = MemoryBroker()
    tap = hooks.transport("d1", MemoryTransport(broker))
    tap.start()
    event = pb.LifecycleEvent(device_id="d1", error=pb.ErrorInfo(code="expired", message="too late"))
    tap.publish("ef/v1/f/dev/d1/events", event.SerializeToString())
    tap.publish("ef/v1/f/dev/d1/events", pb.LifecycleEvent(device_id="d1").SerializeToString())  # no error
    tap.publish("ef/v1/f/dev/d1/samples", pb.SampleBatch(seq=4).SerializeToString())
    assert hooks.last_errors == {"d1": "expired: too late"} and seen == [("d1", 4)]


def test_update_outcomes_are_summarised_with_nearest_rank_percentiles() -> None:
    from simulator.scenario_run import DeviceOutcome, _summarise

    outcomes = [DeviceOutcome(f"d{n}", "g", "active", "1", outcome="updated", update_s=float(n)) for n in range(1, 21)]
    outcomes += [
        DeviceOutcome("f1", "g", "failed", "", error="digest_mismatch: bad bytes", outcome="failed"),
        DeviceOutcome("f2", "g", "idle", "", error="expired: too late", outcome="failed"),
        DeviceOutcome("p1", "g", "downloading", "", outcome="pending"),
        DeviceOutcome("n1", "g", "idle", ""),  # never targeted
    ]
    summary = _summarise(outcomes)
    assert (summary.targeted, summary.updated, summary.failed, summary.pending) == (23, 20, 2, 1)
    assert summary.update_p50_s == 10.5 and summary.update_p95_s == 19.0
    assert summary.reasons == {"digest_mismatch": 1, "expired": 1, "still downloading": 1}
    assert _summarise([]).update_p50_s is None
