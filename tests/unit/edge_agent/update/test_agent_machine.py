"""The update state machine, pure: every (state, event) pair, and the order of its actions."""

from __future__ import annotations

import itertools

import pytest
from support.releases import Keys, Release, chunk_of, desired_state, make_release, model_bytes

from edge_agent.clock import Instant
from edge_agent.update.actions import (
    Action,
    Activate,
    BeginDownload,
    CommitDownload,
    DiscardDownload,
    Emit,
    FollowFanout,
    LeaveFanout,
    LoadModel,
    PruneModels,
    Report,
    RequestChunks,
    RunSelfTest,
    SaveJournal,
    VerifyArtifact,
    WriteChunk,
)
from edge_agent.update.chunks import ChunkPolicy
from edge_agent.update.context import ProbationPolicy
from edge_agent.update.events import (
    Aborted,
    ArtifactRejected,
    ArtifactVerified,
    ChunkReceived,
    Connected,
    DesiredReceived,
    Event,
    EventKind,
    FanoutSubscribed,
    HealthCheck,
    LoadCrashed,
    LoadFailed,
    ModelLoaded,
    SelfTestFailed,
    SelfTestPassed,
    Started,
    Tick,
    TrustReceived,
)
from edge_agent.update.journal import Journal, Outcome, decode_journal, encode_journal
from edge_agent.update.machine import TRANSITIONS, Updater, UpdaterConfig
from edge_agent.update.states import State
from protocols.chunking import ChunkLayout
from protocols.topics import artifact_chunk_filter
from protocols.v1 import messages_pb2 as pb

NOW = Instant(wall_ms=1_800_000_000_000, mono_s=100.0)
DEVICE = "dev-1"
MODEL = object()


def _later(seconds: float) -> Instant:
    return Instant(NOW.wall_ms + int(seconds * 1000), NOW.mono_s + seconds)


def _updater(
    keys: Keys,
    journal: Journal | None = None,
    runtimes: tuple[str, ...] = ("onnxruntime",),
    received: set[int] | None = None,
    window: int = 8,
    probation: ProbationPolicy | None = None,
) -> Updater:
    config = UpdaterConfig(DEVICE, keys.pinned(), runtimes, ChunkPolicy(window, 5.0, 2), probation or ProbationPolicy())
    return Updater(config, journal or Journal(), received)


def _of(actions: list[Action], kind: type) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def _download(up: Updater, release: Release, generation: int) -> list[Action]:
    actions = up.handle(DesiredReceived(desired_state(DEVICE, release, generation)), NOW)
    data = release.artifacts[release.sha256]
    for index in range(-(-len(data) // 16)):
        actions += up.handle(ChunkReceived(chunk_of(data, index)), NOW)
    return actions


def _activate(up: Updater, release: Release, generation: int) -> list[Action]:
    actions = _download(up, release, generation)
    actions += up.handle(ArtifactVerified(up.attempt, release.artifacts[release.sha256]), NOW)
    actions += up.handle(ModelLoaded(up.attempt, MODEL), NOW)
    actions += up.handle(SelfTestPassed(up.attempt, MODEL), NOW)
    return actions


def _in_state(state: State, keys: Keys) -> Updater:
    """An updater driven into `state` with v1 active (except IDLE/FAILED from scratch; PROBATION: v2 on it)."""
    up = _updater(keys, probation=ProbationPolicy(probation_s=600 if state is State.PROBATION else 0))
    v1 = make_release(keys.signer, "v1", 1)
    if state is State.IDLE:
        return up
    if state is State.PROBATION:
        _activate(up, v1, 1)
        _activate(up, make_release(keys.signer, "v2", 2), 2)
        return up
    if state is State.FAILED:
        up.handle(DesiredReceived(desired_state(DEVICE, make_release(keys.signer, "v1", 1, runtime="tflite"), 1)), NOW)
        return up
    _activate(up, v1, 1)
    if state is State.ACTIVE:
        return up
    v2 = make_release(keys.signer, "v2", 2, data=model_bytes("v2", pad=40))
    up.handle(DesiredReceived(desired_state(DEVICE, v2, 2)), NOW)
    if state is State.DOWNLOADING:
        return up
    data = v2.artifacts[v2.sha256]
    for index in range(-(-len(data) // 16)):
        up.handle(ChunkReceived(chunk_of(data, index)), NOW)
    if state is State.VERIFYING:
        return up
    up.handle(ArtifactVerified(up.attempt, data), NOW)
    if state is State.LOADING:
        return up
    up.handle(ModelLoaded(up.attempt, MODEL), NOW)
    assert state is State.SELF_TEST
    return up


def _sample_event(kind: EventKind, up: Updater, keys: Keys) -> Event:
    pending = up.journal.pending
    attempt = up.attempt
    if kind is EventKind.CHUNK:
        data = model_bytes("v2", pad=40)
        chunk = chunk_of(data, 1)
        if pending is not None and pending.layout is not None:
            chunk.sha256 = pending.layout.sha256
        return ChunkReceived(chunk)
    samples: dict[EventKind, Event] = {
        EventKind.STARTED: Started(),
        EventKind.CONNECTED: Connected(),
        EventKind.DESIRED: DesiredReceived(desired_state(DEVICE, make_release(keys.signer, "v3", 3), 3)),
        EventKind.TRUST: TrustReceived(keys.chain),
        EventKind.TICK: Tick(),
        EventKind.FANOUT_SUBSCRIBED: FanoutSubscribed("ef/v1/f/art/x/16/+", True),
        EventKind.ARTIFACT_VERIFIED: ArtifactVerified(attempt, model_bytes("v2", pad=40)),
        EventKind.ARTIFACT_REJECTED: ArtifactRejected(attempt, "digest_mismatch", "bytes differ"),
        EventKind.MODEL_LOADED: ModelLoaded(attempt, MODEL),
        EventKind.LOAD_FAILED: LoadFailed(attempt, "load_failed", "runtime said no"),
        EventKind.LOAD_CRASHED: LoadCrashed(attempt, "the child died of SIGSEGV"),
        EventKind.SELF_TEST_PASSED: SelfTestPassed(attempt, MODEL),
        EventKind.SELF_TEST_FAILED: SelfTestFailed(attempt, "labels differ"),
        EventKind.ABORTED: Aborted(attempt, "store_failed", "disk full"),
        EventKind.HEALTH: HealthCheck(100, 50),
    }
    return samples[kind]


@pytest.mark.parametrize(("state", "kind"), list(itertools.product(State, EventKind)), ids=lambda v: v.name)
def test_every_state_and_event_pair(state: State, kind: EventKind, keys: Keys) -> None:
    up = _in_state(state, keys)
    assert up.state is state
    journal_before = up.journal
    transition = TRANSITIONS.get((state, kind))
    assert up.expects(kind) is (transition is not None)  # what the agent's tick relies on to skip an event
    actions = up.handle(_sample_event(kind, up, keys), _later(60))  # late enough for every chunk timeout
    if transition is None:
        assert actions == [] and up.state is state and up.journal is journal_before
    else:
        assert up.state in transition.targets, (state, kind, up.state)
        # whenever the state changes, the new state is reported
        if up.state is not state:
            assert any(isinstance(a, Report) for a in actions)


@pytest.mark.parametrize(
    "kind",
    [
        EventKind.ARTIFACT_VERIFIED,
        EventKind.ARTIFACT_REJECTED,
        EventKind.MODEL_LOADED,
        EventKind.LOAD_FAILED,
        EventKind.SELF_TEST_PASSED,
        EventKind.SELF_TEST_FAILED,
        EventKind.ABORTED,
    ],
)
def test_a_result_of_a_superseded_attempt_is_ignored(kind: EventKind, keys: Keys) -> None:
    state = {
        EventKind.ARTIFACT_VERIFIED: State.VERIFYING,
        EventKind.ARTIFACT_REJECTED: State.VERIFYING,
        EventKind.MODEL_LOADED: State.LOADING,
        EventKind.LOAD_FAILED: State.LOADING,
        EventKind.SELF_TEST_PASSED: State.SELF_TEST,
        EventKind.SELF_TEST_FAILED: State.SELF_TEST,
        EventKind.ABORTED: State.SELF_TEST,
    }[kind]
    up = _in_state(state, keys)
    event = _sample_event(kind, up, keys)
    stale = type(event)(**{**vars(event), "attempt": up.attempt - 1})
    assert up.handle(stale, NOW) == [] and up.state is state


def test_the_happy_path_saves_before_every_step_that_cannot_be_undone(keys: Keys) -> None:
    up = _updater(keys)
    release = make_release(keys.signer, "v1", 7, data=model_bytes("v1", pad=30))
    actions = _activate(up, release, 1)
    names = [type(a).__name__ for a in actions]
    assert names.index("BeginDownload") < names.index("SaveJournal") < names.index("RequestChunks")
    commit = names.index("CommitDownload")
    assert names[commit + 1] == "SaveJournal"  # the pending update now points at the committed model
    activate = names.index("Activate")
    assert names[activate - 1] == "SaveJournal"
    saved = actions[activate - 1].journal  # type: ignore[union-attr]
    assert saved.active.artifact_sha256 == release.sha256 and saved.pending is None
    assert saved.outcome is Outcome.ACTIVE
    assert saved.desired_generation == 1
    kinds = [pb.EventKind.Name(a.kind) for a in _of(actions, Emit)]
    assert kinds == [
        "EVENT_KIND_UPDATE_STARTED",
        "EVENT_KIND_DOWNLOADED",
        "EVENT_KIND_VERIFIED",
        "EVENT_KIND_SELF_TEST_PASSED",
        "EVENT_KIND_ACTIVATED",
    ]
    assert up.state is State.ACTIVE
    assert _of(actions, Activate)[0].model is MODEL
    assert _of(actions, PruneModels)[-1].keep == {release.sha256}


def test_the_previous_model_is_remembered_and_the_rest_pruned(keys: Keys) -> None:
    up = _updater(keys)
    v1, v2, v3 = (make_release(keys.signer, f"v{i}", i) for i in (1, 2, 3))
    _activate(up, v1, 1)
    _activate(up, v2, 2)
    actions = _activate(up, v3, 3)
    assert up.journal.previous.artifact_sha256 == v2.sha256  # type: ignore[union-attr]
    assert _of(actions, PruneModels)[-1].keep == {v2.sha256, v3.sha256}


def test_the_window_bounds_chunks_in_flight(keys: Keys) -> None:
    up = _updater(keys, window=3)
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=120))
    actions = up.handle(DesiredReceived(desired_state(DEVICE, release, 1)), NOW)
    assert [r.indexes for r in _of(actions, RequestChunks)] == [(0, 1, 2)]
    data = release.artifacts[release.sha256]
    actions = up.handle(ChunkReceived(chunk_of(data, 1)), NOW)
    assert [r.indexes for r in _of(actions, RequestChunks)] == [(3,)]
    assert [(w.index, w.offset) for w in _of(actions, WriteChunk)] == [(1, 16)]
    assert up.handle(ChunkReceived(chunk_of(data, 1)), NOW) == []  # a duplicate
    other = chunk_of(model_bytes("other"), 0)
    assert up.handle(ChunkReceived(other), NOW) == []  # not the artifact being fetched


def test_a_damaged_or_refused_chunk_is_asked_for_again_then_fails(keys: Keys) -> None:
    up = _updater(keys, window=2)
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=40))
    up.handle(DesiredReceived(desired_state(DEVICE, release, 1)), NOW)
    data = release.artifacts[release.sha256]
    short = chunk_of(data, 0)
    short.data = short.data[:-1]
    actions = up.handle(ChunkReceived(short), NOW)
    assert [r.indexes for r in _of(actions, RequestChunks)] == [(0,)] and not _of(actions, WriteChunk)
    refused = chunk_of(data, 0)
    refused.ClearField("data")
    refused.error = "artifact_unavailable: try later"
    up.handle(ChunkReceived(refused), NOW)
    actions = up.handle(ChunkReceived(refused), NOW)  # third strike with max_retries=2
    assert up.state is State.FAILED
    assert up.journal.last_error.code == "download_failed"  # type: ignore[union-attr]
    assert "artifact_unavailable" in up.journal.last_error.message  # type: ignore[union-attr]
    assert _of(actions, DiscardDownload)[0].sha256 == release.sha256


def test_chunks_time_out_and_are_asked_for_again(keys: Keys) -> None:
    up = _updater(keys, window=2)
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=40))
    up.handle(DesiredReceived(desired_state(DEVICE, release, 1)), NOW)
    assert up.handle(Tick(), _later(4.9)) == []
    actions = up.handle(Tick(), _later(5.0))
    assert [r.indexes for r in _of(actions, RequestChunks)] == [(0, 1)]
    up.handle(Tick(), _later(10.0))
    actions = up.handle(Tick(), _later(15.0))
    assert up.state is State.FAILED and "did not arrive" in up.journal.last_error.message  # type: ignore[union-attr]
    assert pb.EventKind.Name(_of(actions, Emit)[0].kind) == "EVENT_KIND_ERROR"


def test_a_reconnect_asks_again_for_chunks_in_flight_without_counting_a_retry(keys: Keys) -> None:
    up = _updater(keys, window=2)
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=40))
    up.handle(DesiredReceived(desired_state(DEVICE, release, 1)), NOW)
    for _ in range(5):
        actions = up.handle(Connected(), NOW)
        assert [r.indexes for r in _of(actions, RequestChunks)] == [(0, 1)]
    assert up.state is State.DOWNLOADING


def test_a_restart_mid_download_asks_only_for_missing_chunks(keys: Keys) -> None:
    up = _updater(keys, window=8)
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=40))
    up.handle(DesiredReceived(desired_state(DEVICE, release, 1)), NOW)
    data = release.artifacts[release.sha256]
    up.handle(ChunkReceived(chunk_of(data, 0)), NOW)
    up.handle(ChunkReceived(chunk_of(data, 2)), NOW)
    total = -(-len(data) // 16)

    again = _updater(keys, journal=up.journal, received={0, 2, 99})
    assert again.state is State.DOWNLOADING
    assert _of(again.handle(Started(), NOW), RequestChunks) == []
    actions = again.handle(Connected(), NOW)
    assert [r.indexes for r in _of(actions, RequestChunks)] == [tuple(i for i in range(total) if i not in (0, 2))]


def test_a_restart_after_the_download_verifies_without_fetching(keys: Keys) -> None:
    up = _updater(keys)
    release = make_release(keys.signer, "v1", 1)
    _download(up, release, 1)
    data = release.artifacts[release.sha256]
    total = -(-len(data) // 16)
    again = _updater(keys, journal=up.journal, received=set(range(total)))
    actions = again.handle(Started(), NOW)
    assert again.state is State.VERIFYING and _of(actions, VerifyArtifact)[0].downloaded
    up.handle(ArtifactVerified(up.attempt, data), NOW)  # committed: the journal says the model is on disk
    third = _updater(keys, journal=up.journal)
    assert third.state is State.LOADING  # the load was journalled as started: it is tried again (update.crash)
    assert not _of(third.handle(Started(), NOW), VerifyArtifact)[0].downloaded
    assert third.state is State.VERIFYING


def test_an_operator_rollback_to_an_older_release_is_a_new_assignment_and_installs(keys: Keys) -> None:
    up = _updater(keys)
    _activate(up, make_release(keys.signer, "v5", 5), 1)
    older = make_release(keys.signer, "v4", 4)  # a lower manifest sequence: order comes from the counter
    _activate(up, older, 2)
    assert up.state is State.ACTIVE and up.journal.active.manifest().version == "v4"  # type: ignore[union-attr]


def test_a_replayed_older_assignment_changes_nothing(keys: Keys) -> None:
    up = _updater(keys)
    old = desired_state(DEVICE, make_release(keys.signer, "v1", 1), 1)
    _activate(up, make_release(keys.signer, "v2", 2), 2)
    journal = up.journal
    actions = up.handle(DesiredReceived(old), NOW)
    assert up.journal is journal and up.state is State.ACTIVE
    assert [a.error.code for a in _of(actions, Emit)] == ["replay"]  # type: ignore[union-attr]
    assert not _of(actions, SaveJournal)


def test_the_preferred_runtime_wins_and_an_artifact_on_disk_is_not_fetched(keys: Keys) -> None:
    v1 = make_release(keys.signer, "v1", 1)
    up = _updater(keys, runtimes=("tflite", "onnxruntime"))
    _activate(up, v1, 1)
    both = make_release(keys.signer, "v2", 2, extra=[("tflite", b"tflite-bytes")])
    actions = up.handle(DesiredReceived(desired_state(DEVICE, both, 2)), NOW)
    assert _of(actions, BeginDownload)[0].sha256 == both.manifest.artifacts[1].sha256  # the tflite one

    # v1's artifact re-signed under a newer sequence (how a cloud rolls back): already on disk
    resigned = make_release(keys.signer, "v1b", 3, data=v1.artifacts[v1.sha256])
    actions = up.handle(DesiredReceived(desired_state(DEVICE, resigned, 3)), NOW)
    assert not _of(actions, BeginDownload) and not _of(actions, RequestChunks)
    verify = _of(actions, VerifyArtifact)[0]
    assert up.state is State.VERIFYING and not verify.downloaded
    actions = up.handle(ArtifactVerified(up.attempt, v1.artifacts[v1.sha256]), NOW)
    assert not _of(actions, CommitDownload) and _of(actions, LoadModel)


def test_no_usable_runtime_or_no_location_is_refused(keys: Keys) -> None:
    up = _updater(keys)
    up.handle(DesiredReceived(desired_state(DEVICE, make_release(keys.signer, "v1", 1, runtime="tflite"), 1)), NOW)
    assert up.journal.last_error.code == "no_compatible_artifact"  # type: ignore[union-attr]
    desired = desired_state(DEVICE, make_release(keys.signer, "v2", 2), 2)
    desired.ClearField("artifacts")
    up.handle(DesiredReceived(desired), NOW)
    assert up.journal.last_error.code == "malformed_payload"  # type: ignore[union-attr]
    desired = desired_state(DEVICE, make_release(keys.signer, "v3", 3), 3)
    desired.artifacts[0].total_chunks += 1
    up.handle(DesiredReceived(desired), NOW)
    assert up.journal.last_error.code == "malformed_payload"  # type: ignore[union-attr]


def test_a_redelivered_assignment_is_only_reported_and_an_older_one_refused(keys: Keys) -> None:
    up = _updater(keys)
    v1 = make_release(keys.signer, "v1", 1)
    _activate(up, v1, 5)
    assert up.handle(DesiredReceived(desired_state(DEVICE, v1, 5)), NOW) == [Report()]
    refused = up.handle(DesiredReceived(desired_state(DEVICE, v1, 4)), NOW)
    assert [type(a) for a in refused] == [Emit] and up.view().desired_generation == 5
    v2 = make_release(keys.signer, "v2", 2)
    up.handle(DesiredReceived(desired_state(DEVICE, v2, 6)), NOW)
    assert up.state is State.DOWNLOADING
    assert up.handle(DesiredReceived(desired_state(DEVICE, v2, 6)), NOW) == []  # already on it
    assert up.view().desired_generation == 6 and up.view().last_error is None


def test_self_test_failure_and_load_failure_keep_the_active_model(keys: Keys) -> None:
    for failure in (SelfTestFailed, LoadFailed):
        up = _in_state(State.SELF_TEST if failure is SelfTestFailed else State.LOADING, keys)
        event = (
            failure(up.attempt, "labels differ")
            if failure is SelfTestFailed
            else failure(up.attempt, "load_failed", "no")
        )
        actions = up.handle(event, NOW)
        assert up.state is State.FAILED
        assert up.journal.active.manifest().version == "v1"  # type: ignore[union-attr]
        assert not _of(actions, Activate) and not _of(actions, RunSelfTest)
        assert _of(actions, PruneModels)[0].keep == {up.journal.active.artifact_sha256}  # type: ignore[union-attr]


def test_saved_journals_round_trip(keys: Keys) -> None:
    from edge_agent.update.journal import decode_journal, encode_journal

    up = _updater(keys)
    actions = _activate(up, make_release(keys.signer, "v1", 1), 1)
    actions += up.handle(DesiredReceived(desired_state(DEVICE, make_release(keys.signer, "v2", 2), 2)), NOW)
    for save in _of(actions, SaveJournal):
        assert decode_journal(encode_journal(save.journal)) == save.journal


def test_the_retained_desired_state_redelivered_after_a_restart_is_not_verified_again(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from protocols import trust

    up = _updater(keys)
    v1 = make_release(keys.signer, "v1", 1)
    retained = desired_state(DEVICE, v1, 5)
    up.handle(DesiredReceived(retained), NOW)  # what the broker keeps and re-delivers on every connect
    data = v1.artifacts[v1.sha256]
    for index in range(-(-len(data) // 16)):
        up.handle(ChunkReceived(chunk_of(data, index)), NOW)
    up.handle(ArtifactVerified(up.attempt, data), NOW)
    up.handle(ModelLoaded(up.attempt, MODEL), NOW)
    saves = up.handle(SelfTestPassed(up.attempt, MODEL), NOW)
    assert up.state is State.ACTIVE
    journal = [a for a in saves if isinstance(a, SaveJournal)][-1].journal
    restarted = _updater(keys, journal=decode_journal(encode_journal(journal)))
    checks: list[bytes] = []
    real = trust.verify_signature
    monkeypatch.setattr(trust, "verify_signature", lambda *args: checks.append(args[2]) or real(*args))
    assert restarted.handle(DesiredReceived(retained), NOW) == [Report()]
    assert checks == []  # no signature checked: cryptography stays unloaded on a device that only restarts
    changed = desired_state(DEVICE, v1, 5)
    changed.assignment.signature = bytes(64)  # other bytes under the same counter: checked (and refused)
    assert [type(a) for a in restarted.handle(DesiredReceived(changed), NOW)] == [Emit] and checks


def _fanout_desired(release: Release, generation: int, chunk_size: int = 16) -> pb.DesiredState:
    desired = desired_state(DEVICE, release, generation, chunk_size=chunk_size)
    for location in desired.artifacts:
        location.fanout_filter = artifact_chunk_filter(location.sha256, chunk_size, fleet=release.keys.fleet)
    return desired


def test_with_fanout_the_device_follows_the_fleet_topics_and_asks_only_for_what_does_not_come(keys: Keys) -> None:
    up = _updater(keys, window=4)
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=60))
    data = release.artifacts[release.sha256]
    total = ChunkLayout.for_bytes(data, 16).total_chunks
    actions = up.handle(DesiredReceived(_fanout_desired(release, 1)), NOW)
    follow = _of(actions, FollowFanout)
    assert [f.topic_filter for f in follow] == [f"ef/v1/{keys.fleet}/art/{release.sha256}/16/+"]
    assert _of(actions, RequestChunks) == []  # nothing asked per device while the retained chunks come
    for index in range(total - 1):  # all but the last arrive from the fan-out ...
        assert _of(up.handle(ChunkReceived(chunk_of(data, index)), NOW), RequestChunks) == []
    actions = up.handle(Tick(), _later(6))  # ... the last does not: asked for on the device's own topic
    assert [r.indexes for r in _of(actions, RequestChunks)] == [(total - 1,)]
    actions = up.handle(ChunkReceived(chunk_of(data, total - 1)), _later(6))
    assert [a.topic_filter for a in _of(actions, LeaveFanout)] == [follow[0].topic_filter]
    assert up.state is State.VERIFYING


def test_the_wait_for_fanout_chunks_starts_at_the_suback(keys: Keys) -> None:
    """A broker busy with a fleet's subscriptions acknowledges late; before its SUBACK the retained chunks
    cannot come, so a chunk_timeout counted from the desired state made every device ask for every chunk on
    its own topics (the old code asked at the first tick past 5 s here)."""
    up = _updater(keys, window=4)
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=60))
    follow = _of(up.handle(DesiredReceived(_fanout_desired(release, 1)), NOW), FollowFanout)[0]
    assert _of(up.handle(Tick(), _later(6)), RequestChunks) == []  # no SUBACK yet: nothing could have come
    assert up.handle(FanoutSubscribed("ef/v1/other/art/x/16/+", True), _later(8)) == []  # not this download's
    assert up.handle(FanoutSubscribed(follow.topic_filter, True), _later(8)) == []
    assert _of(up.handle(Tick(), _later(12)), RequestChunks) == []  # 4 s after the SUBACK: still waiting
    requests = _of(up.handle(Tick(), _later(13.5)), RequestChunks)  # 5.5 s after: what did not come is asked for
    assert [r.indexes for r in requests] == [(0, 1, 2, 3)]


def test_a_fanout_subscription_refused_or_never_acknowledged_falls_back_to_per_device_requests(keys: Keys) -> None:
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=60))
    refused = _updater(keys, window=4)
    follow = _of(refused.handle(DesiredReceived(_fanout_desired(release, 1)), NOW), FollowFanout)[0]
    requests = _of(refused.handle(FanoutSubscribed(follow.topic_filter, False), _later(1)), RequestChunks)
    assert [r.indexes for r in requests] == [(0, 1, 2, 3)]
    silent = _updater(keys, window=4)  # no SUBACK ever (a lost one): the subscription's own bound, 30 s
    silent.handle(DesiredReceived(_fanout_desired(release, 1)), NOW)
    assert _of(silent.handle(Tick(), _later(29)), RequestChunks) == []
    assert [r.indexes for r in _of(silent.handle(Tick(), _later(31)), RequestChunks)] == [(0, 1, 2, 3)]


def test_a_fanout_filter_other_than_the_content_address_is_not_followed(keys: Keys) -> None:
    up = _updater(keys)
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=60))
    desired = desired_state(DEVICE, release, 1)
    desired.artifacts[0].fanout_filter = f"ef/v1/{keys.fleet}/dev/other-device/artifact/data"  # unsigned wrapper
    actions = up.handle(DesiredReceived(desired), NOW)
    assert _of(actions, FollowFanout) == [] and _of(actions, RequestChunks)


def test_a_replaced_or_failed_fanout_download_leaves_its_topics(keys: Keys) -> None:
    up = _updater(keys)
    v1 = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=60))
    v2 = make_release(keys.signer, "v2", 2, data=model_bytes("v2", pad=60))
    first = _of(up.handle(DesiredReceived(_fanout_desired(v1, 1)), NOW), FollowFanout)
    actions = up.handle(DesiredReceived(_fanout_desired(v2, 2)), NOW)
    assert [a.topic_filter for a in _of(actions, LeaveFanout)] == [first[0].topic_filter]
    assert len(_of(actions, FollowFanout)) == 1
    actions = up.handle(Started(), NOW)  # after a restart mid-download: followed again
    assert len(_of(actions, FollowFanout)) == 1


def test_a_wrong_digest_from_fanout_chunks_is_fetched_again_per_device_once(keys: Keys) -> None:
    up = _updater(keys, window=4)
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=60))
    data = release.artifacts[release.sha256]
    total = ChunkLayout.for_bytes(data, 16).total_chunks
    up.handle(DesiredReceived(_fanout_desired(release, 1)), NOW)
    for index in range(total):
        chunk = chunk_of(data, index)
        if index == 1:
            chunk.data = bytes(b ^ 0xFF for b in chunk.data)  # the right length, the wrong bytes
        actions = up.handle(ChunkReceived(chunk), NOW)
    assert up.state is State.VERIFYING
    actions = up.handle(ArtifactRejected(up.attempt, "digest_mismatch", "bad digest"), NOW)
    assert up.state is State.DOWNLOADING and _of(actions, LeaveFanout) and _of(actions, DiscardDownload)
    assert [r.indexes for r in _of(actions, RequestChunks)] == [(0, 1, 2, 3)]  # all again, per device
    assert up.journal.pending is not None and up.journal.pending.fanout_failed
    restored = decode_journal(encode_journal(up.journal)).pending  # and it survives a restart
    assert restored is not None and restored.fanout_failed
    assert _of(up.handle(Started(), NOW), FollowFanout) == []
    for index in range(total):
        chunk = chunk_of(data, index)
        if index == 1:
            chunk.data = bytes(b ^ 0xFF for b in chunk.data)  # wrong again: now it fails as without fan-out
        up.handle(ChunkReceived(chunk), NOW)
    up.handle(ArtifactRejected(up.attempt, "digest_mismatch", "bad digest"), NOW)
    assert up.state is State.FAILED
