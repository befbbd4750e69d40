"""Telemetry windows: drift sketches over the reference bins, latency percentiles, accuracy, samples."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from support import wait_until
from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.releases import Keys, fake_load_model, make_release, model_bytes

from edge_agent.serving.runtime import FunctionModel, Prediction
from edge_agent.serving.sampler import Sampler
from edge_agent.serving.slot import ServingModel
from edge_agent.serving.telemetry import LATENCY_BOUNDS_US, FeatureBins, Telemetry, bin_index, percentile_from_histogram
from edge_agent.update.journal import InstalledModel
from protocols.telemetry_bins import feature_sketches, latency_histogram
from protocols.topics import Channel
from protocols.v1 import messages_pb2 as pb


def _serving(keys: Keys, tag: str = "v1", regressor_edges: list[float] | None = None) -> ServingModel:
    release = make_release(keys.signer, tag, 1)
    if regressor_edges is not None:
        manifest = release.manifest
        manifest.io.task = pb.TASK_REGRESSION
        manifest.io.ClearField("class_labels")
        manifest.reference.predictions.ClearField("labels")
        manifest.reference.predictions.bin_edges.extend(regressor_edges)
        release.signed = keys.signer.sign(manifest)
        model = FunctionModel(3, lambda x: Prediction(None, x[:, 0] * 10, None))
    else:
        model = fake_load_model(release.manifest.artifacts[0], release.artifacts[release.sha256], release.manifest.io)
    return ServingModel.of(model, InstalledModel(release.signed.SerializeToString(), release.sha256))


def test_values_outside_the_edges_go_to_the_end_bins() -> None:
    edges = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    values = np.array([-1.0, 0.0, 0.1, 0.3, 0.6, 0.99, 1.0, 5.0])
    assert bin_index(edges, values).tolist() == [0, 0, 0, 1, 2, 3, 3, 3]


def test_a_window_counts_features_predictions_and_accuracy(keys: Keys) -> None:
    serving = _serving(keys)
    telemetry = Telemetry("dev-1", start_ms=1000, serving=serving)
    x = np.array([[-1, 0.1, 0.1], [0.1, 0.3, 0.3], [0.3, 0.6, 0.6], [0.6, 0.99, 0.99], [0.99, 5, 5]], np.float32)
    telemetry.record(serving, x, serving.model.predict(x), latency_us=120.0)
    for row, label in (([0.9, 0, 0], "v1:pos"), ([0.9, 0, 0], "v1:neg"), ([0.1, 0, 0], "v1:neg")):
        one = np.array([row], np.float32)
        telemetry.record(serving, one, serving.model.predict(one), latency_us=80.0, label=label)
    telemetry.record_error(latency_us=50.0)

    window = telemetry.close_window(end_ms=5000, seq=7, next_serving=serving)
    assert window is not None
    assert (window.device_id, window.seq, window.window_start_ms, window.window_end_ms) == ("dev-1", 7, 1000, 5000)
    assert (window.inference_count, window.error_count) == (8, 1)
    assert (window.labelled_count, window.correct_count) == (3, 2)
    assert window.model.version == "v1"
    # the window names its model only; the artifact's sha256 (66 B of every window) is in ReportedState
    assert window.model == pb.ModelRef(model_id=serving.ref.model_id, version="v1", sequence=serving.ref.sequence)
    assert serving.ref.artifact_sha256 and serving.ref.runtime
    features = feature_sketches(window)
    assert features[0] == [2 + 1, 1, 1, 3]  # -1 and 0.1, plus the labelled 0.1 row, in bin 0; 0.9 x2 + 0.99
    assert features[1] == [4, 1, 1, 2]
    assert list(window.predictions.labels) == ["v1:neg", "v1:pos"]
    assert list(window.predictions.counts) == [3 + 1, 2 + 2]  # 0.6 and 0.99 are over the 0.5 threshold
    bounds, counts = latency_histogram(window)
    assert sum(counts) == 5 and bounds == list(LATENCY_BOUNDS_US)
    assert window.rss_bytes > 0

    following = telemetry.close_window(end_ms=6000, seq=8, next_serving=serving)
    assert following is not None
    assert following.window_start_ms == 5000 and following.inference_count == 0
    assert telemetry.total_inferences == 8 and telemetry.total_errors == 1
    # the totals since start are the closed windows' plus the open one's
    one = x[:1]
    telemetry.record(serving, one, serving.model.predict(one), latency_us=80.0)
    telemetry.record_error()
    assert telemetry.total_inferences == 9 and telemetry.total_errors == 2
    telemetry.close_window(end_ms=7000, seq=9, next_serving=None)
    assert telemetry.total_inferences == 9 and telemetry.total_errors == 2


def test_an_idle_window_without_a_model_is_not_sent() -> None:
    telemetry = Telemetry("dev-1", 0)
    assert telemetry.close_window(1, 1, None) is None
    telemetry.record_error()
    window = telemetry.close_window(2, 2, None)
    assert window is not None and window.error_count == 1 and not window.HasField("model")


def test_percentiles_come_from_the_histogram_within_a_bucket(keys: Keys) -> None:
    serving = _serving(keys)
    telemetry = Telemetry("dev-1", 0, serving)
    x = np.array([[0.9, 0, 0]], np.float32)
    prediction = serving.model.predict(x)
    for latency in [100.0] * 50 + [1000.0] * 45 + [20_000.0] * 5:
        telemetry.record(serving, x, prediction, latency)
    window = telemetry.close_window(1, 1, serving)
    assert window is not None
    assert 79 <= window.latency_p50_us <= 100
    assert 794 <= window.latency_p95_us <= 1000
    empty = telemetry.close_window(2, 2, serving)
    assert empty is not None
    assert empty.latency_p50_us == 0 and empty.latency_p95_us == 0


@pytest.mark.parametrize("q", [0.0, 0.5, 0.99, 1.0])
def test_a_single_value_is_its_own_percentile(q: float) -> None:
    counts = [0] * (len(LATENCY_BOUNDS_US) + 1)
    counts[20] = 3
    assert percentile_from_histogram(LATENCY_BOUNDS_US, counts, q, 1000.0, 1000.0) == pytest.approx(1000.0)


def test_a_regressor_counts_predictions_over_the_reference_bins(keys: Keys) -> None:
    serving = _serving(keys, regressor_edges=[0.0, 2.0, 5.0, 10.0])
    telemetry = Telemetry("dev-1", 0, serving)
    x = np.array([[0.1, 0, 0], [0.3, 0, 0], [0.9, 0, 0], [2.0, 0, 0]], np.float32)  # predictions 1, 3, 9, 20
    telemetry.record(serving, x, serving.model.predict(x), 10.0)
    window = telemetry.close_window(1, 1, serving)
    assert window is not None
    assert list(window.predictions.bin_edges) == [0.0, 2.0, 5.0, 10.0]
    assert list(window.predictions.counts) == [1, 1, 2]
    assert not window.predictions.labels


def test_a_call_that_straddles_a_swap_counts_but_adds_no_sketch(keys: Keys) -> None:
    old, new = _serving(keys, "v1"), _serving(keys, "v2")
    telemetry = Telemetry("dev-1", 0, new)
    x = np.array([[0.9, 0, 0]], np.float32)
    telemetry.record(old, x, old.model.predict(x), 10.0)
    window = telemetry.close_window(1, 1, new)
    assert window is not None
    assert window.inference_count == 1 and sum(window.predictions.counts) == 0
    assert not window.feature_counts and not window.features


def test_the_sampler_keeps_a_budgeted_share(keys: Keys) -> None:
    serving = _serving(keys)
    x = np.random.default_rng(0).random((50, 3), dtype=np.float32)
    prediction = Prediction([str(v) for v in range(50)], None, None)
    clock_calls: list[int] = []

    def now_ms() -> int:
        clock_calls.append(1)
        return 5

    sampler = Sampler(rate=1.0, max_per_window=3, rng=random.Random(1))
    sampler.offer(serving, x, prediction, None, now_ms)
    sampler.offer(serving, x, prediction, None, now_ms)  # the budget is spent: nothing more is kept
    batch = sampler.drain("dev-1", seq=4)
    assert batch is not None and len(batch.samples) == 3 and batch.seq == 4
    assert batch.samples[0].prediction == "0" and batch.samples[0].input == pytest.approx(x[0].tolist())
    assert batch.samples[0].ts_ms == 5 and batch.model.version == "v1"
    assert len(clock_calls) == 1
    assert sampler.drain("dev-1", seq=5) is None

    half = Sampler(rate=0.5, max_per_window=1000, rng=random.Random(2))
    many = np.repeat(x, 20, axis=0)
    half.offer(serving, many, Prediction([str(v) for v in range(len(many))], None, None), None, now_ms)
    kept = half.drain("dev-1", 1)
    assert kept is not None and 400 <= len(kept.samples) <= 600
    assert len({s.prediction for s in kept.samples}) == len(kept.samples)  # rows from all over the batch
    none = Sampler(rate=0.0, max_per_window=10)
    none.offer(serving, x, prediction, None, now_ms)
    assert none.drain("dev-1", 1) is None


def test_the_agent_publishes_windows_and_samples(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys) -> None:
    agent = make_agent(sample_rate=1.0, sample_max_per_window=2)
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", fails_on_negative=True))
    cloud.deploy("dev-1", release, generation=1)
    assert agent.wait_for(lambda s: is_state(s, pb.UPDATE_STATE_ACTIVE, 1), 5)
    agent.predict([0.9, 0.1, 0.1], label="v1:pos")
    agent.predict(np.array([[0.1, 0.2, 0.3], [0.95, 0.5, 0.5]]))
    with pytest.raises(ValueError, match="expected shape"):
        agent.predict([1.0, 2.0])  # the caller's mistake: refused, not counted against the model
    with pytest.raises(Exception, match="model v1 failed"):
        agent.predict([0.5, 0.5, -1.0])  # the model failing in service: an inference error
    window = agent.flush_telemetry()
    assert window is not None
    assert (window.inference_count, window.error_count, window.labelled_count, window.correct_count) == (3, 1, 1, 1)
    assert window.model.version == "v1"
    sent = [pb.TelemetryWindow.FromString(p) for p in cloud.payloads("dev-1", Channel.TELEMETRY)]
    assert sent[-1] == window
    samples = [pb.SampleBatch.FromString(p) for p in cloud.payloads("dev-1", Channel.SAMPLES)]
    assert len(samples) == 1 and len(samples[0].samples) == 2 and samples[0].samples[0].label == "v1:pos"
    assert agent.counts == (3, 1)


def test_small_and_large_batches_bin_alike_and_match_the_reference_rule() -> None:
    profiles = [
        pb.FeatureProfile(index=0, bin_edges=[0.0, 0.25, 0.5, 0.75, 1.0]),
        pb.FeatureProfile(index=2, bin_edges=[-1.0, 0.0, 1.0]),
        pb.FeatureProfile(index=1, bin_edges=[5.0, 6.0]),  # a single bin
        pb.FeatureProfile(index=9, bin_edges=[0.0, 1.0, 2.0]),  # beyond the input's columns: skipped
    ]
    bins = FeatureBins.of(profiles)
    assert bins is not None and bins.sizes == (4, 2, 1, 2)
    rng = np.random.default_rng(3)
    x = rng.choice([-2.0, -1.0, 0.0, 0.1, 0.25, 0.5, 0.9, 1.0, 3.0, np.nan], size=(40, 3)).astype(np.float32)

    dense = bins.count(x)
    halves = bins.count(x[:20]) + bins.count(x[20:])
    assert dense.tolist() == halves.tolist()

    expected = []
    for profile in profiles[:3]:
        column = x[:, profile.index]
        column = column[np.isfinite(column)]
        edges = np.asarray(profile.bin_edges)
        expected += np.bincount(bin_index(edges, column), minlength=len(edges) - 1).tolist()
    assert dense.tolist()[: len(expected)] == expected
    assert dense.tolist()[len(expected) :] == [0, 0]


def test_threads_recording_at_once_while_windows_close_count_every_call_once(keys: Keys) -> None:
    """Most calls are appended without the lock and folded later (Telemetry's docstring): with 6 threads
    recording at once (batches of 1 and 3, some labelled, some errors) and windows closing meanwhile, the
    windows' counts and latency samples add up exactly to what was recorded."""
    import sys
    import threading

    serving = _serving(keys)
    telemetry = Telemetry("dev-1", start_ms=0, serving=serving)
    one, three = np.array([[0.9, 0, 0]], np.float32), np.array([[0.1, 0, 0]] * 3, np.float32)
    answers = {1: serving.model.predict(one), 3: serving.model.predict(three)}
    threads_n, calls_n = 6, 3000
    start, done = threading.Barrier(threads_n + 1), threading.Event()

    def work(seed: int) -> None:
        start.wait()
        for i in range(calls_n):
            x = three if (i + seed) % 4 == 0 else one
            label = "v1:pos" if x is one and i % 50 == 0 else None
            telemetry.record(serving, x, answers[x.shape[0]], latency_us=10.0 + i % 900, label=label)
            if i % 100 == 0:
                telemetry.record_error(latency_us=5.0)

    windows: list[pb.TelemetryWindow] = []

    def close() -> None:
        start.wait()
        while not done.is_set():
            window = telemetry.close_window(end_ms=1, seq=len(windows), next_serving=serving)
            assert window is not None
            windows.append(window)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        workers = [threading.Thread(target=work, args=(seed,)) for seed in range(threads_n)]
        closer = threading.Thread(target=close)
        for t in [*workers, closer]:
            t.start()
        for t in workers:
            t.join()
        done.set()
        closer.join()
    finally:
        sys.setswitchinterval(old_interval)
    last = telemetry.close_window(end_ms=2, seq=len(windows), next_serving=None)
    assert last is not None
    windows.append(last)

    rows = sum(3 if (i + seed) % 4 == 0 else 1 for seed in range(threads_n) for i in range(calls_n))
    labelled = sum(1 for seed in range(threads_n) for i in range(0, calls_n, 50) if (i + seed) % 4 != 0)
    errors = threads_n * len(range(0, calls_n, 100))
    assert len(windows) > 2  # windows did close while the threads recorded
    assert sum(w.inference_count for w in windows) == rows
    assert sum(w.error_count for w in windows) == errors
    assert sum(w.labelled_count for w in windows) == sum(w.correct_count for w in windows) == labelled
    assert sum(sum(latency_histogram(w)[1]) for w in windows) == threads_n * calls_n + errors
    assert telemetry.total_inferences == rows and telemetry.total_errors == errors


def test_a_new_models_first_window_is_due_once_it_holds_enough_rows(keys: Keys) -> None:
    v1, v2 = _serving(keys, "v1"), _serving(keys, "v2")
    telemetry = Telemetry("dev-1", start_ms=1000, serving=v1, first_window_rows=10)
    one = np.array([[0.9, 0, 0]], np.float32)
    assert not any(telemetry.record(v1, one, v1.model.predict(one), 80.0) for _ in range(20))  # no swap: no hurry
    telemetry.close_window(end_ms=2000, seq=1, next_serving=v2)  # v2 activated
    nine = np.repeat(one, 9, axis=0)
    assert not telemetry.record(v2, nine, v2.model.predict(nine), 80.0)
    assert telemetry.record_error(50.0)  # the 10th (a failed call counts: errors are evidence too)
    assert not telemetry.record(v2, one, v2.model.predict(one), 80.0)  # said once
    telemetry.close_window(end_ms=2100, seq=2, next_serving=v2)  # that flush: the next window is ordinary
    assert not any(telemetry.record(v2, one, v2.model.predict(one), 80.0) for _ in range(20))


def test_an_agent_sends_a_new_models_first_window_without_waiting_for_the_interval(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent(telemetry_first_window_rows=10)  # telemetry_interval_s is an hour
    for generation, tag in ((1, "v1"), (2, "v2")):
        cloud.deploy(agent.device_id, make_release(keys.signer, tag, generation), generation=generation)
        assert agent.wait_for(lambda s, g=generation: is_state(s, pb.UPDATE_STATE_ACTIVE, g), 10), agent.status()

    def v2_windows() -> list[pb.TelemetryWindow]:
        windows = [pb.TelemetryWindow.FromString(p) for p in cloud.payloads(agent.device_id, Channel.TELEMETRY)]
        return [w for w in windows if w.model.version == "v2" and w.inference_count]

    for _ in range(9):
        agent.predict([0.9, 0.1, 0.1])
    time.sleep(0.5)
    assert v2_windows() == []
    agent.predict([0.9, 0.1, 0.1])
    assert wait_until(lambda: len(v2_windows()) == 1, 5), cloud.payloads(agent.device_id, Channel.TELEMETRY)
    assert v2_windows()[0].inference_count == 10


def test_labels_given_as_an_array_are_counted_like_a_list(keys: Keys) -> None:
    """A runtime may answer its labels as a numpy array: with numpy 2.4 `list += array` is a ufunc add, which
    raised in the telemetry path (benchmarks/drift.py crashed there); the window counts them as a list."""
    serving = _serving(keys)
    x = np.array([[0.1, 0, 0], [0.9, 0, 0], [0.6, 0, 0]], np.float32)
    counts = []
    for as_array in (False, True):
        telemetry = Telemetry("dev-1", start_ms=1000, serving=serving)
        answer = serving.model.predict(x)
        labels = np.asarray(answer.labels) if as_array else list(answer.labels)
        telemetry.record(serving, x, Prediction(labels, answer.values, answer.scores), latency_us=10.0)
        window = telemetry.close_window(end_ms=5000, seq=1, next_serving=serving)
        assert window is not None
        counts.append(list(window.predictions.counts))
    assert counts[0] == counts[1] == [1, 2]


def test_windows_of_equal_manifests_share_their_bins_yet_count_apart(keys: Keys) -> None:
    # two devices of one process serving the same release (each its own parsed manifest): the bins are built
    # once, read-only, and each window still counts only its own rows
    release = make_release(keys.signer, "shared", 1)
    servings = []
    for _ in range(2):
        model = fake_load_model(release.manifest.artifacts[0], release.artifacts[release.sha256], release.manifest.io)
        servings.append(ServingModel.of(model, InstalledModel(release.signed.SerializeToString(), release.sha256)))
    first, second = (Telemetry(f"dev-{n}", start_ms=0, serving=s) for n, s in enumerate(servings))
    x = np.array([[0.1, 0.3, 0.6]], np.float32)
    first.record(servings[0], x, servings[0].model.predict(x), latency_us=10.0)
    one, other = first.close_window(1, 1, servings[0]), second.close_window(1, 1, servings[1])
    assert one is not None and other is not None
    assert first.flagged[1] is second.flagged[1] is not None  # the old code built the bins per window
    assert not first.flagged[1].padded.flags.writeable
    assert sum(sum(f) for f in feature_sketches(one).values()) == 3 and not feature_sketches(other)
    # another manifest in the same process gets its own layout, not the first one's
    regressor = _serving(keys, "other", regressor_edges=[0.0, 1.0, 2.0])
    window = Telemetry("dev-3", start_ms=0, serving=regressor).close_window(1, 1, regressor)
    assert window is not None and list(window.predictions.bin_edges) == [0.0, 1.0, 2.0]
    assert not window.predictions.labels
