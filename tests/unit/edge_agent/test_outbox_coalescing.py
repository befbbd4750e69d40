"""The outbox sends fewer messages per update: an intermediate state (an update's first too) the next one supersedes
within hold_s never travels, and lifecycle events travel together, with the terminal state, to a cloud that reads
batches (edge_agent.outbox): a fast update sends one events batch and one report."""

from __future__ import annotations

import pytest
from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.net import wait_until
from support.releases import Keys, make_release, model_bytes

from edge_agent.clock import ManualClock
from edge_agent.outbox import Outbox
from edge_agent.serving.sampler import Sampler
from edge_agent.transport import MemoryBroker, MemoryTransport
from edge_agent.update.actions import Emit
from edge_agent.update.journal import LastError
from edge_agent.update.machine import UpdaterView
from edge_agent.update.states import State
from protocols.capabilities import CLOUD_CAPABILITIES, EVENT_BATCH
from protocols.topics import Channel, Direction, parse_device_topic
from protocols.v1 import messages_pb2 as pb
from protocols.validation import MAX_EVENT_BATCH

DEVICE = "dev-1"
HOLD_S = 1.0
EVENT_HOLD_S = 10.0


class Wire:
    """Everything the outbox puts on the broker, decoded, in order."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.messages: list[tuple[Channel, pb.ReportedState | pb.LifecycleEvent]] = []
        self._client = MemoryTransport(broker)
        self._client.set_message_handler(self._on_message)
        self._client.subscribe("ef/v1/+/dev/+/#")
        self._client.start()

    def _on_message(self, topic: str, payload: bytes) -> None:
        channel = parse_device_topic(topic).channel
        decoder = {Channel.REPORTED: pb.ReportedState, Channel.EVENTS: pb.LifecycleEvent}[channel]
        self.messages.append((channel, decoder.FromString(payload)))

    def states(self) -> list[str]:
        return [pb.UpdateState.Name(m.update_state) for c, m in self.messages if c is Channel.REPORTED]  # type: ignore[union-attr]

    def events(self) -> list[pb.LifecycleEvent]:
        return [m for c, m in self.messages if c is Channel.EVENTS]  # type: ignore[misc]


@pytest.fixture
def setup() -> tuple[Outbox, ManualClock, Wire]:
    broker, clock = MemoryBroker(), ManualClock()
    wire = Wire(broker)
    transport = MemoryTransport(broker)
    transport.start()
    outbox = Outbox(DEVICE, "default", transport, clock, Sampler(0.0, 0), hold_s=HOLD_S, event_hold_s=EVENT_HOLD_S)
    return outbox, clock, wire


def report(outbox: Outbox, state: State, generation: int = 1, error: LastError | None = None) -> None:
    view = UpdaterView(state, None, None, "dep-1", generation, error)
    outbox.report(view, {}, ["onnxruntime"])


def names(events: list[pb.LifecycleEvent]) -> list[str]:
    return [pb.EventKind.Name(e.kind) for e in events]


def test_a_fast_update_sends_only_its_terminal_state(setup):
    outbox, clock, wire = setup
    report(outbox, State.DOWNLOADING)  # an update's first state waits too: the next may supersede it
    report(outbox, State.VERIFYING)
    clock.advance(0.3)
    outbox.send_due()
    report(outbox, State.LOADING)
    report(outbox, State.SELF_TEST)
    assert wire.states() == []  # held: superseded before their time was up
    assert outbox.reported().update_state == pb.UPDATE_STATE_SELF_TEST  # Agent.wait_for reads this, not the wire
    report(outbox, State.ACTIVE)  # terminal: at once, the held ones never
    assert wire.states() == ["UPDATE_STATE_ACTIVE"]
    clock.advance(5)
    outbox.send_due()
    assert wire.states() == ["UPDATE_STATE_ACTIVE"]


def test_a_slow_update_reports_its_first_state_within_the_hold(setup):
    outbox, clock, wire = setup
    report(outbox, State.DOWNLOADING)
    assert outbox.due_s == clock.now().mono_s + HOLD_S  # the agent's runner wakes it then
    clock.advance(HOLD_S - 0.1)
    outbox.send_due()
    assert wire.states() == []
    clock.advance(0.1)
    outbox.send_due()
    assert wire.states() == ["UPDATE_STATE_DOWNLOADING"]
    assert outbox.due_s is None


def test_a_held_state_goes_out_when_its_time_is_up(setup):
    outbox, clock, wire = setup
    report(outbox, State.DOWNLOADING)
    report(outbox, State.VERIFYING)
    clock.advance(HOLD_S - 0.1)
    outbox.send_due()
    report(outbox, State.LOADING)  # the latest wins, but not later than hold_s after the first held
    clock.advance(0.1)
    outbox.send_due()
    assert wire.states() == ["UPDATE_STATE_LOADING"]
    report(outbox, State.SELF_TEST)  # held again, from now
    clock.advance(HOLD_S)
    outbox.send_due()
    assert wire.states() == ["UPDATE_STATE_LOADING", "UPDATE_STATE_SELF_TEST"]


def test_a_failed_state_goes_at_once_and_a_new_update_supersedes_a_held_state(setup):
    outbox, clock, wire = setup
    report(outbox, State.DOWNLOADING)
    report(outbox, State.VERIFYING)
    report(outbox, State.FAILED, error=LastError("digest_mismatch", "bad bytes"))
    assert wire.states() == ["UPDATE_STATE_FAILED"]
    report(outbox, State.DOWNLOADING, generation=2)
    report(outbox, State.VERIFYING, generation=3)  # another generation: the shadow names the latest only
    clock.advance(HOLD_S)
    outbox.send_due()
    assert wire.states()[1:] == ["UPDATE_STATE_VERIFYING"]
    assert [m.desired_generation for c, m in wire.messages if c is Channel.REPORTED][1:] == [3]  # type: ignore[union-attr]


def test_with_no_hold_every_state_travels_at_once():
    broker, clock = MemoryBroker(), ManualClock()
    wire = Wire(broker)
    transport = MemoryTransport(broker)
    transport.start()
    outbox = Outbox(DEVICE, "default", transport, clock, Sampler(0.0, 0), hold_s=0, event_hold_s=0)
    outbox.cloud_capabilities = frozenset({EVENT_BATCH})
    outbox.emit(Emit(pb.EVENT_KIND_UPDATE_STARTED, "dep-1"))
    report(outbox, State.DOWNLOADING)
    report(outbox, State.VERIFYING)
    assert wire.states() == ["UPDATE_STATE_DOWNLOADING", "UPDATE_STATE_VERIFYING"]
    assert names(wire.events()) == ["EVENT_KIND_UPDATE_STARTED"]


def test_with_no_report_hold_the_events_still_wait_for_the_terminal_state():
    broker, clock = MemoryBroker(), ManualClock()
    wire = Wire(broker)
    transport = MemoryTransport(broker)
    transport.start()
    outbox = Outbox(DEVICE, "default", transport, clock, Sampler(0.0, 0), hold_s=0, event_hold_s=EVENT_HOLD_S)
    outbox.cloud_capabilities = frozenset({EVENT_BATCH})
    outbox.emit(Emit(pb.EVENT_KIND_UPDATE_STARTED, "dep-1"))
    report(outbox, State.DOWNLOADING)
    assert [c for c, _m in wire.messages] == [Channel.REPORTED]
    outbox.emit(Emit(pb.EVENT_KIND_ACTIVATED, "dep-1"))
    report(outbox, State.ACTIVE)
    assert [c for c, _m in wire.messages] == [Channel.REPORTED, Channel.EVENTS, Channel.REPORTED]


def test_a_fast_update_sends_one_events_batch_and_its_terminal_state(setup):
    outbox, _clock, wire = setup
    outbox.cloud_capabilities = frozenset({EVENT_BATCH})
    outbox.emit(Emit(pb.EVENT_KIND_UPDATE_STARTED, "dep-1"))
    report(outbox, State.DOWNLOADING)
    outbox.emit(Emit(pb.EVENT_KIND_DOWNLOADED, "dep-1"))
    report(outbox, State.VERIFYING)
    outbox.emit(Emit(pb.EVENT_KIND_VERIFIED, "dep-1"))
    report(outbox, State.LOADING)
    outbox.emit(Emit(pb.EVENT_KIND_SELF_TEST_PASSED, "dep-1"))
    outbox.emit(Emit(pb.EVENT_KIND_ACTIVATED, "dep-1"))
    report(outbox, State.ACTIVE)
    kinds = [c for c, _m in wire.messages]
    assert kinds == [Channel.EVENTS, Channel.REPORTED]  # the events ahead of the report
    (sent,) = wire.events()
    assert names([sent, *sent.batch]) == [
        "EVENT_KIND_UPDATE_STARTED", "EVENT_KIND_DOWNLOADED", "EVENT_KIND_VERIFIED", "EVENT_KIND_SELF_TEST_PASSED",
        "EVENT_KIND_ACTIVATED",
    ]  # fmt: skip
    seqs = [e.seq for e in (sent, *sent.batch)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert sent.device_id == DEVICE and sent.schema_version >= 1
    assert all(not more.device_id for more in sent.batch)  # the first names the device for all


def test_a_slow_update_sends_its_progress_alone_and_its_events_with_the_terminal_state(setup):
    outbox, clock, wire = setup
    outbox.cloud_capabilities = frozenset({EVENT_BATCH})
    outbox.emit(Emit(pb.EVENT_KIND_UPDATE_STARTED, "dep-1"))
    report(outbox, State.DOWNLOADING)
    clock.advance(HOLD_S)
    outbox.send_due()
    assert [c for c, _m in wire.messages] == [Channel.REPORTED]  # progress, not history
    outbox.emit(Emit(pb.EVENT_KIND_DOWNLOADED, "dep-1"))
    report(outbox, State.VERIFYING)
    clock.advance(HOLD_S)
    outbox.send_due()
    outbox.emit(Emit(pb.EVENT_KIND_VERIFIED, "dep-1"))
    outbox.emit(Emit(pb.EVENT_KIND_SELF_TEST_PASSED, "dep-1"))
    outbox.emit(Emit(pb.EVENT_KIND_ACTIVATED, "dep-1"))
    report(outbox, State.ACTIVE)
    assert [c for c, _m in wire.messages] == [Channel.REPORTED, Channel.REPORTED, Channel.EVENTS, Channel.REPORTED]
    assert wire.states() == ["UPDATE_STATE_DOWNLOADING", "UPDATE_STATE_VERIFYING", "UPDATE_STATE_ACTIVE"]
    (sent,) = wire.events()
    assert 1 + len(sent.batch) == 5


def test_events_without_a_terminal_state_go_at_the_latest_event_hold_s_after_the_first(setup):
    outbox, clock, wire = setup
    outbox.cloud_capabilities = frozenset({EVENT_BATCH})
    outbox.emit(Emit(pb.EVENT_KIND_UPDATE_STARTED, "dep-1"))
    first_s = clock.now().mono_s
    report(outbox, State.DOWNLOADING)
    clock.advance(EVENT_HOLD_S - 0.1)
    outbox.send_due()
    outbox.emit(Emit(pb.EVENT_KIND_DOWNLOADED, "dep-1"))
    assert wire.events() == [] and outbox.due_s == first_s + EVENT_HOLD_S
    clock.advance(0.1)
    outbox.send_due()
    (sent,) = wire.events()
    assert names([sent, *sent.batch]) == ["EVENT_KIND_UPDATE_STARTED", "EVENT_KIND_DOWNLOADED"]


def test_a_failure_event_is_sent_at_once_with_those_held_before_it(setup):
    outbox, _clock, wire = setup
    outbox.cloud_capabilities = frozenset({EVENT_BATCH})
    outbox.emit(Emit(pb.EVENT_KIND_DOWNLOADED, "dep-1"))
    report(outbox, State.VERIFYING)
    assert wire.messages == []
    outbox.emit(Emit(pb.EVENT_KIND_VERIFICATION_FAILED, "dep-1", error=LastError("digest_mismatch", "bad bytes")))
    (sent,) = wire.events()
    assert names([sent, *sent.batch]) == ["EVENT_KIND_DOWNLOADED", "EVENT_KIND_VERIFICATION_FAILED"]
    assert sent.batch[0].error.code == "digest_mismatch"
    assert wire.states() == []  # the failed state follows the event: the held verifying never travels
    report(outbox, State.FAILED, error=LastError("digest_mismatch", "bad bytes"))
    assert [c for c, _m in wire.messages] == [Channel.EVENTS, Channel.REPORTED]
    assert wire.states() == ["UPDATE_STATE_FAILED"]


def test_events_to_a_cloud_that_names_no_batches_travel_alone_at_once(setup):
    outbox, _clock, wire = setup  # no cloud_capabilities: an older cloud would store only a batch's first event
    outbox.emit(Emit(pb.EVENT_KIND_DOWNLOADED, "dep-1"))
    outbox.emit(Emit(pb.EVENT_KIND_VERIFIED, "dep-1"))
    assert names(wire.events()) == ["EVENT_KIND_DOWNLOADED", "EVENT_KIND_VERIFIED"]
    assert all(not e.batch for e in wire.events())


def test_no_batch_is_longer_than_the_cloud_accepts(setup):
    outbox, _clock, wire = setup
    outbox.cloud_capabilities = frozenset({EVENT_BATCH})
    for _ in range(MAX_EVENT_BATCH + 10):
        outbox.emit(Emit(pb.EVENT_KIND_DOWNLOADED, "dep-1"))
    outbox.send_held()
    sent = wire.events()
    assert [1 + len(e.batch) for e in sent] == [MAX_EVENT_BATCH + 1, 9]  # all of them, none refused


def test_an_agent_sends_two_upward_messages_for_an_update_faster_than_the_hold(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent(report_hold_s=30.0)  # every update here is faster than that
    # the start's and the connect's reports (idle: at once) and its presence
    assert wait_until(
        lambda: cloud.payloads("dev-1", Channel.PRESENCE) and len(cloud.payloads("dev-1", Channel.REPORTED)) >= 2
    )
    upward = [channel for channel in Channel if channel.spec.direction is Direction.UP]
    before = {channel: len(cloud.payloads("dev-1", channel)) for channel in upward}
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=100))
    cloud.deploy("dev-1", release, generation=1, fanout=True, cloud_capabilities=CLOUD_CAPABILITIES)
    assert agent.wait_for(lambda s: is_state(s, pb.UPDATE_STATE_ACTIVE, 1), 5), agent.status()
    assert wait_until(lambda: len(cloud.payloads("dev-1", Channel.REPORTED)) > before[Channel.REPORTED])
    sent = {c: n for c in upward if (n := len(cloud.payloads("dev-1", c)) - before[c])}
    assert sent == {Channel.EVENTS: 1, Channel.REPORTED: 1}, sent  # no chunk request either: the fan-out came
    (batch,) = cloud.events("dev-1")[-1:]
    assert names([batch, *batch.batch]) == [
        "EVENT_KIND_UPDATE_STARTED", "EVENT_KIND_DOWNLOADED", "EVENT_KIND_VERIFIED", "EVENT_KIND_SELF_TEST_PASSED",
        "EVENT_KIND_ACTIVATED",
    ]  # fmt: skip
    assert pb.ReportedState.FromString(cloud.payloads("dev-1", Channel.REPORTED)[-1]).update_state == (
        pb.UPDATE_STATE_ACTIVE
    )
