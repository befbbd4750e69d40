"""Probation in the pure update machine: when it starts, what the health check decides, how a desired state
ends it, the crash-loop count at start; and the shadow's comparison and queue (no agent)."""

from __future__ import annotations

import random
import threading

import numpy as np
from support.releases import Keys, Release, chunk_of, desired_state, make_release

from edge_agent.clock import Instant
from edge_agent.serving.runtime import FunctionModel, Prediction
from edge_agent.serving.shadow import Shadow, agreement
from edge_agent.serving.slot import ServingModel
from edge_agent.update.actions import Action, Activate, Emit, EndProbation, PruneModels, Report, RollBack, SaveJournal
from edge_agent.update.chunks import ChunkPolicy
from edge_agent.update.context import ProbationPolicy
from edge_agent.update.events import (
    ArtifactVerified,
    ChunkReceived,
    DesiredReceived,
    HealthCheck,
    ModelLoaded,
    SelfTestPassed,
)
from edge_agent.update.journal import InstalledModel, Journal, Outcome, Probation, decode_journal, encode_journal
from edge_agent.update.machine import Updater, UpdaterConfig
from edge_agent.update.probation import count_boot
from edge_agent.update.states import State
from protocols.codes import ErrorCode
from protocols.v1 import messages_pb2 as pb

NOW = Instant(wall_ms=1_800_000_000_000, mono_s=100.0)
POLICY = ProbationPolicy(probation_s=600, max_error_rate=0.2, min_inferences=50, max_restarts=3,
                         min_shadow_agreement=0.5, shadow_alpha=1e-6)  # fmt: skip


def _updater(keys: Keys, policy: ProbationPolicy = POLICY) -> Updater:
    return Updater(UpdaterConfig("dev-1", keys.pinned(), ("onnxruntime",), ChunkPolicy(8, 5.0, 2), policy), Journal())


def _activate(up: Updater, keys: Keys, tag: str, generation: int, release: Release | None = None) -> list[Action]:
    release = release or make_release(keys.signer, tag, generation)
    actions = up.handle(DesiredReceived(desired_state("dev-1", release, generation)), NOW)
    data = release.artifacts[release.sha256]
    for index in range(-(-len(data) // 16)):
        actions += up.handle(ChunkReceived(chunk_of(data, index)), NOW)
    actions += up.handle(ArtifactVerified(up.attempt, data), NOW)
    actions += up.handle(ModelLoaded(up.attempt, object()), NOW)
    return actions + up.handle(SelfTestPassed(up.attempt, object()), NOW)


def _of(actions: list[Action], kind: type) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def _on_probation(keys: Keys, v2: Release | None = None) -> Updater:
    up = _updater(keys)
    _activate(up, keys, "v1", 1)
    _activate(up, keys, "v2", 2, v2)
    assert up.state is State.PROBATION
    return up


def test_only_an_activation_with_a_model_to_fall_back_to_starts_a_probation(keys: Keys) -> None:
    up = _updater(keys)
    first = _activate(up, keys, "v1", 1)
    assert up.state is State.ACTIVE and up.journal.probation is None
    assert _of(first, Activate)[0].keep_previous is False
    second = _activate(up, keys, "v2", 2)
    assert up.state is State.PROBATION and up.view().state.wire == pb.UPDATE_STATE_ACTIVE
    assert up.journal.probation == Probation(until_ms=NOW.wall_ms + 600_000)
    assert up.view().probation_until_ms == NOW.wall_ms + 600_000
    saves = _of(second, SaveJournal)
    activate = second.index(_of(second, Activate)[0])
    assert _of(second, Activate)[0].keep_previous and saves[-1].journal.probation is not None
    assert second.index(saves[-1]) < activate  # journalled before the swap
    assert decode_journal(encode_journal(up.journal)) == up.journal

    disabled = _updater(keys, ProbationPolicy(probation_s=0))
    _activate(disabled, keys, "v1", 1)
    assert not _of(_activate(disabled, keys, "v2", 2), Activate)[0].keep_previous
    assert disabled.state is State.ACTIVE


def test_the_cloud_rolling_back_during_the_probation_swaps_the_loaded_previous_model_in_at_once(keys: Keys) -> None:
    v1 = make_release(keys.signer, "v1", 1)
    up = _updater(keys)
    _activate(up, keys, "v1", 1, v1)
    _activate(up, keys, "v2", 2)
    on_v1, on_v2 = up.journal.previous, up.journal.active
    # a staged rollout's rollback: a new assignment of v1, still loaded: no download, verify, load, self-test
    actions = up.handle(DesiredReceived(desired_state("dev-1", v1, 3)), NOW)
    assert up.state is State.ACTIVE and up.journal.probation is None
    assert _of(actions, RollBack) == [RollBack(on_v1)] and not _of(actions, Activate)  # type: ignore[arg-type]
    assert not _of(actions, EndProbation)  # RollBack lets the replaced model go itself; none first
    saved = _of(actions, SaveJournal)[-1].journal
    assert actions.index(_of(actions, SaveJournal)[-1]) < actions.index(_of(actions, RollBack)[0])  # journalled first
    assert (saved.active, saved.previous, saved.desired_generation, saved.outcome) == (on_v1, on_v2, 3, Outcome.ACTIVE)
    assert [e.kind for e in _of(actions, Emit)] == [pb.EVENT_KIND_UPDATE_STARTED, pb.EVENT_KIND_ACTIVATED]
    assert up.view().state.wire == pb.UPDATE_STATE_ACTIVE and up.view().desired_generation == 3
    assert up.handle(DesiredReceived(desired_state("dev-1", v1, 3)), NOW) == [Report()]  # a re-delivery: nothing


def test_the_cloud_rolling_back_after_the_probation_loads_the_model_again_and_starts_no_probation(
    keys: Keys,
) -> None:
    v1 = make_release(keys.signer, "v1", 1)
    up = _updater(keys)
    _activate(up, keys, "v1", 1, v1)
    _activate(up, keys, "v2", 2)
    up.handle(HealthCheck(1, 0), Instant(NOW.wall_ms + 600_000, NOW.mono_s + 600))  # passed: v1 let go
    assert up.state is State.ACTIVE
    actions = _activate(up, keys, "v1", 3, v1)  # an operator's rollback, later: v1 is no longer loaded
    assert up.state is State.ACTIVE and up.journal.probation is None
    assert not _of(actions, Activate)[0].keep_previous and not _of(actions, RollBack)


def test_the_error_rate_judges_only_from_the_minimum_of_calls_then_rolls_back(keys: Keys) -> None:
    up = _on_probation(keys)
    v1, v2 = up.journal.previous, up.journal.active
    assert up.handle(HealthCheck(0, 49), NOW) == [] and up.state is State.PROBATION  # 49 calls: too few
    assert up.handle(HealthCheck(80, 20), NOW) == [] and up.state is State.PROBATION  # 20 % is not above
    actions = up.handle(HealthCheck(79, 21), NOW)
    assert up.state is State.FAILED
    assert [type(a) for a in actions] == [SaveJournal, RollBack, Emit, PruneModels, Report]
    journal = actions[0].journal  # type: ignore[union-attr]
    assert (journal.active, journal.previous, journal.probation, journal.outcome) == (v1, None, None, Outcome.FAILED)
    assert journal.last_error.code == ErrorCode.PROBATION_FAILED and journal.desired_generation == 2
    assert actions[1] == RollBack(v1)  # type: ignore[arg-type]
    event = actions[2]
    assert isinstance(event, Emit) and event.kind == pb.EVENT_KIND_ROLLED_BACK and event.model == v2
    assert actions[3] == PruneModels(frozenset({v1.artifact_sha256}))  # type: ignore[union-attr]
    assert up.handle(HealthCheck(0, 1000), NOW) == []  # FAILED takes no health check


def test_the_probation_ends_when_its_time_is_over(keys: Keys) -> None:
    up = _on_probation(keys)
    later = Instant(NOW.wall_ms + 599_999, NOW.mono_s + 600)
    assert up.handle(HealthCheck(1, 0), later) == []
    over = Instant(NOW.wall_ms + 600_000, NOW.mono_s + 600)
    actions = up.handle(HealthCheck(1, 0), over)
    assert up.state is State.ACTIVE and up.journal.probation is None
    assert [type(a) for a in actions] == [SaveJournal, EndProbation, Report]
    assert up.journal.previous is not None  # unloaded, not forgotten: still on disk
    assert up.handle(HealthCheck(0, 1000), over) == [] and up.state is State.ACTIVE


def test_another_model_ends_the_probation_a_redelivery_does_not(keys: Keys) -> None:
    v2 = make_release(keys.signer, "v2", 2)
    up = _on_probation(keys, v2)
    redelivered = up.handle(DesiredReceived(desired_state("dev-1", v2, 2)), NOW)
    assert up.state is State.PROBATION and not _of(redelivered, EndProbation)
    reassigned = up.handle(DesiredReceived(desired_state("dev-1", v2, 3)), NOW)  # same model, new counter
    assert up.state is State.PROBATION and up.journal.probation is not None
    assert _of(reassigned, SaveJournal)[-1].journal.probation is not None
    actions = up.handle(DesiredReceived(desired_state("dev-1", make_release(keys.signer, "v3", 4), 4)), NOW)
    assert up.state is State.DOWNLOADING and isinstance(actions[0], EndProbation)
    assert all(save.journal.probation is None for save in _of(actions, SaveJournal))


def test_a_start_on_probation_counts_a_restart_and_a_crash_loop_rolls_back(keys: Keys) -> None:
    journal = _on_probation(keys).journal
    v1, v2 = journal.previous, journal.active
    journal, rolled = count_boot(journal, POLICY)
    journal, rolled = count_boot(journal, POLICY)
    assert rolled is None and journal.probation == Probation(NOW.wall_ms + 600_000, restarts=2)
    journal, rolled = count_boot(journal, POLICY)
    assert rolled is not None and rolled.kind == pb.EVENT_KIND_ROLLED_BACK and rolled.model == v2
    assert (journal.active, journal.previous, journal.probation, journal.outcome) == (v1, None, None, Outcome.FAILED)
    assert journal.last_error is not None and journal.last_error.code == "probation_failed"
    assert count_boot(journal, POLICY) == (journal, None)  # nothing on probation any more
    restarted = Updater(UpdaterConfig("dev-1", keys.pinned(), ("onnxruntime",), probation=POLICY), journal)
    assert restarted.state is State.FAILED


def _serving(keys: Keys, predict) -> ServingModel:  # type: ignore[no-untyped-def]
    release = make_release(keys.signer, "v1", 1)
    model = FunctionModel(3, predict)
    return ServingModel.of(model, InstalledModel(release.signed.SerializeToString(), release.sha256))


def test_agreement_is_the_same_label_or_a_value_within_the_tolerance() -> None:
    def labels(*values: str) -> Prediction:
        return Prediction(list(values), None, None)

    assert agreement(labels("a", "b", "c"), labels("a", "x", "c"), 1e-3) == (3, 2)
    new = Prediction(None, np.array([1.0, 2.0, 3.0]), None)
    old = Prediction(None, np.array([[1.0005], [2.1], [3.0]]), None)
    assert agreement(new, old, 1e-3) == (3, 2)


def test_the_shadow_queue_drops_when_full_and_the_worker_counts_the_rest(keys: Keys) -> None:
    gate = threading.Event()

    def slow(x: np.ndarray) -> Prediction:
        gate.wait(5)
        return Prediction(["a"] * len(x), None, None)

    previous, new = _serving(keys, slow), _serving(keys, slow)
    figures: list[tuple[int, int, int]] = []
    shadow = Shadow(previous, new, rate=1.0, record=lambda *f: figures.append(f), rng=random.Random(1), queue_size=2)
    rows, answer = np.zeros((1, 3), np.float32), Prediction(["a"], None, None)
    shadow.offer(previous, rows, answer)  # not the model on probation: ignored
    for _ in range(10):
        shadow.offer(new, rows, answer)  # never blocks, whatever the previous model does
    gate.set()
    deadline = threading.Event()
    for _ in range(100):
        if sum(c + d for c, _, d in figures) >= 10:
            break
        deadline.wait(0.05)
    compared = sum(c for c, _, _ in figures)
    dropped = sum(d for _, _, d in figures)
    assert compared + dropped == 10 and dropped >= 7 and compared == sum(a for _, a, _ in figures)
    shadow.stop()


def _compiled(x: np.ndarray, y: np.ndarray, version: str, c: float = 1.0) -> ServingModel:
    """A logistic regression compiled to ONNX, answering in onnxruntime as the agent runs it."""
    from sklearn.linear_model import LogisticRegression

    from edge_agent.serving.runtime import load_model
    from model_compiler import compile_estimator

    result = compile_estimator(LogisticRegression(C=c, max_iter=500).fit(x, y), x, y, target="onnx", quantize="none")
    manifest = pb.Manifest(model_id="blobs", version=version, sequence=int(version), created_at_ms=1)
    manifest.MergeFrom(result.fragment)
    artifact = result.artifacts[0]
    loaded = load_model(artifact.artifact, artifact.data, manifest.io)
    return ServingModel(loaded, None, manifest, pb.ModelRef(model_id="blobs", version=version))  # type: ignore[arg-type]


def _shadowed(previous: ServingModel, new: ServingModel, rows: np.ndarray) -> tuple[int, int]:
    """(compared, agreed) after the agent's KeptModel shadows every call of 10 rows through the previous model."""
    from edge_agent.serving.shadow import KeptModel

    class Every:
        shadow_rate, shadow_tolerance = 1.0, 1e-3

    kept = KeptModel(Every(), lambda *_: None, random.Random(0), "test-shadow")
    kept.keep(previous, new, (0, 0))
    try:
        for start in range(0, len(rows), 10):
            batch = rows[start : start + 10]
            kept.offer(new, batch, new.model.predict(batch))
            for _ in range(500):  # bounded: 5 s per call
                if kept.shadow_since_kept()[0] >= start + len(batch):
                    break
                threading.Event().wait(0.01)
        return kept.shadow_since_kept()
    finally:
        kept.release()


def test_a_model_whose_shadow_disagrees_overwhelmingly_is_rolled_back_on_the_device(keys: Keys) -> None:
    """A real model pair in onnxruntime: the new model was trained on labels moved to the next class, so it
    hardly ever answers like the previous one; with no cloud at all, the probation's sequential test on the
    shadow rolls it back, saying why. A retrained, equal model agreeing nearly always goes on with its probation."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=600, centers=3, n_features=4, random_state=0)
    x = x.astype(np.float32)
    previous = _compiled(x, y, "1")
    scrambled = _compiled(x, (y + 1) % 3, "2")  # trained on labels each moved to the next class
    equal = _compiled(x, y, "3", c=0.5)
    live = x[::5][:80]  # 80 live rows

    compared, agreed = _shadowed(previous, scrambled, live)
    assert compared == 80 and agreed < 20
    up = _on_probation(keys)
    actions = up.handle(HealthCheck(inferences=80, errors=0, shadow_compared=compared, shadow_agreed=agreed), NOW)
    assert up.state is State.FAILED and _of(actions, RollBack)
    emitted = _of(actions, Emit)[0]
    assert emitted.kind == pb.EVENT_KIND_ROLLED_BACK and emitted.error.code == ErrorCode.PROBATION_FAILED
    assert f"shadow agreement {agreed}/80 with the previous model" in emitted.error.message

    compared, agreed = _shadowed(previous, equal, live)
    assert compared == 80 and agreed >= 76
    up = _on_probation(keys)
    assert up.handle(HealthCheck(80, 0, compared, agreed), NOW) == [] and up.state is State.PROBATION
    # few comparisons, even all disagreeing, are no overwhelming evidence at a false-alarm bound of 1e-6
    assert up.handle(HealthCheck(15, 0, 15, 0), NOW) == [] and up.state is State.PROBATION
