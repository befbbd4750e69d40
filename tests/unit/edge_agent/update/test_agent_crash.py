"""The update machine's rows for a load that killed a process (`edge_agent.update.crash`): the runtime is
journalled as crashed, the cloud hears `runtime_crashed`, another artifact of the manifest is tried, and the
serving model is never touched."""

from __future__ import annotations

from support.releases import Keys, chunk_of, desired_state, make_release, model_bytes

from edge_agent.clock import Instant
from edge_agent.update.actions import Action, Activate, BeginDownload, Emit, LoadModel, SaveJournal, VerifyArtifact
from edge_agent.update.chunks import ChunkPolicy
from edge_agent.update.context import UpdaterConfig
from edge_agent.update.crash import MAX_LOAD_ATTEMPTS
from edge_agent.update.events import (
    ArtifactVerified,
    ChunkReceived,
    DesiredReceived,
    LoadCrashed,
    ModelLoaded,
    SelfTestPassed,
    Started,
)
from edge_agent.update.journal import Journal, PendingUpdate, decode_journal, encode_journal
from edge_agent.update.machine import Updater
from edge_agent.update.states import State
from protocols.codes import ErrorCode
from protocols.v1 import messages_pb2 as pb

NOW = Instant(wall_ms=1_800_000_000_000, mono_s=100.0)
DEVICE = "dev-1"
BOTH = ("onnxruntime", "tflite")


def _updater(keys: Keys, journal: Journal | None = None, runtimes: tuple[str, ...] = BOTH) -> Updater:
    return Updater(UpdaterConfig(DEVICE, keys.pinned(), runtimes, ChunkPolicy(8, 5.0, 2)), journal or Journal())


def _of(actions: list[Action], kind: type) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def _to_loading(up: Updater, desired: pb.DesiredState, data: bytes) -> list[Action]:
    actions = up.handle(DesiredReceived(desired), NOW)
    for index in range(-(-len(data) // 16)):
        actions += up.handle(ChunkReceived(chunk_of(data, index)), NOW)
    actions += up.handle(ArtifactVerified(up.attempt, data), NOW)
    assert up.state is State.LOADING
    return actions


def _serving_v1(keys: Keys) -> Updater:
    up = _updater(keys)
    v1 = make_release(keys.signer, "v1", 1)
    _to_loading(up, desired_state(DEVICE, v1, 1), v1.artifacts[v1.sha256])
    up.handle(ModelLoaded(up.attempt, object()), NOW)
    up.handle(SelfTestPassed(up.attempt, object()), NOW)
    assert up.state is State.ACTIVE
    return up


def _two_artifacts(keys: Keys) -> tuple[pb.DesiredState, bytes]:
    onnx = model_bytes("v2", pad=40)
    v2 = make_release(keys.signer, "v2", 2, data=onnx, extra=[("tflite", model_bytes("v2-lite", pad=30))])
    return desired_state(DEVICE, v2, 2), onnx


def test_the_load_is_journalled_before_it_starts(keys: Keys) -> None:
    up = _serving_v1(keys)
    desired, onnx = _two_artifacts(keys)
    actions = _to_loading(up, desired, onnx)
    saves = [i for i, a in enumerate(actions) if isinstance(a, SaveJournal)]
    load = next(i for i, a in enumerate(actions) if isinstance(a, LoadModel))
    last_save = actions[max(i for i in saves if i < load)]
    assert isinstance(last_save, SaveJournal) and last_save.journal.pending is not None
    assert last_save.journal.pending.load_attempts == 1
    # the journal alone starts a restarted machine in LOADING
    assert _updater(keys, decode_journal(encode_journal(last_save.journal))).state is State.LOADING


def test_a_child_crash_marks_the_runtime_and_falls_back_to_the_other_artifact(keys: Keys) -> None:
    up = _serving_v1(keys)
    desired, onnx = _two_artifacts(keys)
    _to_loading(up, desired, onnx)
    actions = up.handle(LoadCrashed(up.attempt, "child died of SIGSEGV"), NOW)
    assert up.journal.crashed_runtimes == {"onnxruntime"}
    errors = [e for e in _of(actions, Emit) if e.error is not None]
    assert errors[0].error.code == ErrorCode.RUNTIME_CRASHED and "trying tflite" in errors[0].error.message
    assert up.state is State.DOWNLOADING
    pending = up.journal.pending
    assert pending is not None and pending.target.artifact().runtime == "tflite" and pending.load_attempts == 0
    assert _of(actions, BeginDownload) and not _of(actions, Activate)
    assert up.journal.active is not None and up.journal.active.manifest().version == "v1"  # still serving v1


def test_a_crash_with_no_other_artifact_fails_and_keeps_the_active_model(keys: Keys) -> None:
    up = _serving_v1(keys)
    v2 = make_release(keys.signer, "v2", 2, data=model_bytes("v2", pad=40))
    _to_loading(up, desired_state(DEVICE, v2, 2), v2.artifacts[v2.sha256])
    actions = up.handle(LoadCrashed(up.attempt, "child died of SIGSEGV"), NOW)
    assert up.state is State.FAILED and up.journal.pending is None
    assert up.journal.last_error is not None and up.journal.last_error.code == ErrorCode.RUNTIME_CRASHED
    assert up.journal.crashed_runtimes == {"onnxruntime"}
    assert up.journal.active is not None and up.journal.active.manifest().version == "v1"
    assert _of(actions, Emit)[0].kind == pb.EVENT_KIND_ERROR
    # the crashed runtime is not chosen again: an onnxruntime-only release is refused at once
    v3 = make_release(keys.signer, "v3", 3)
    up.handle(DesiredReceived(desired_state(DEVICE, v3, 3)), NOW)
    assert up.state is State.FAILED and up.journal.last_error.code == ErrorCode.NO_COMPATIBLE_ARTIFACT


def test_a_stale_crash_report_is_ignored(keys: Keys) -> None:
    up = _serving_v1(keys)
    desired, onnx = _two_artifacts(keys)
    _to_loading(up, desired, onnx)
    assert up.handle(LoadCrashed(up.attempt - 1, "old"), NOW) == [] and up.state is State.LOADING


def test_starts_after_the_agent_died_while_loading_retry_once_then_fall_back(keys: Keys) -> None:
    up = _serving_v1(keys)
    desired, onnx = _two_artifacts(keys)
    _to_loading(up, desired, onnx)
    journal = up.journal
    for attempt in range(1, MAX_LOAD_ATTEMPTS):  # a power cut mid-load is given another try
        up = _updater(keys, decode_journal(encode_journal(journal)))
        assert up.state is State.LOADING
        actions = up.handle(Started(), NOW)
        assert up.state is State.VERIFYING and _of(actions, VerifyArtifact)
        actions = up.handle(ArtifactVerified(up.attempt, onnx), NOW)
        assert up.journal.pending is not None and up.journal.pending.load_attempts == attempt + 1
        journal = up.journal
    up = _updater(keys, decode_journal(encode_journal(journal)))
    actions = up.handle(Started(), NOW)
    assert up.journal.crashed_runtimes == {"onnxruntime"}
    assert up.state is State.DOWNLOADING and up.journal.pending is not None
    assert up.journal.pending.target.artifact().runtime == "tflite"
    error = next(e.error for e in _of(actions, Emit) if e.error is not None)
    assert error.code == ErrorCode.RUNTIME_CRASHED and f"died {MAX_LOAD_ATTEMPTS} times" in error.message
    assert up.journal.active is not None and up.journal.active.manifest().version == "v1"


def test_a_pending_update_without_its_desired_state_fails_rather_than_guess(keys: Keys) -> None:
    up = _serving_v1(keys)
    desired, onnx = _two_artifacts(keys)
    _to_loading(up, desired, onnx)
    pending = up.journal.pending
    assert pending is not None
    old = up.journal.with_(pending=PendingUpdate(pending.generation, pending.deployment_id, pending.target, None, 9))
    up = _updater(keys, old)
    up.handle(Started(), NOW)
    assert up.state is State.FAILED and up.journal.last_error is not None
    assert up.journal.last_error.code == ErrorCode.RUNTIME_CRASHED


def test_journal_without_the_new_fields_still_decodes(keys: Keys) -> None:
    up = _serving_v1(keys)
    journal = up.journal.with_(crashed_runtimes=frozenset({"onnxruntime"}))
    assert decode_journal(encode_journal(journal)) == journal
    import json

    doc = json.loads(encode_journal(journal))
    del doc["crashed_runtimes"]
    assert decode_journal(json.dumps(doc).encode()).crashed_runtimes == frozenset()
