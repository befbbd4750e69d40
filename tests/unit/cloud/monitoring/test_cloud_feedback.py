from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll

from cloud.errors import InvalidRequestError
from cloud.monitoring import Ingestor, feedback
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

NOW_MS = 1_700_000_000_000


def test_accuracy_lines_carry_wilson_intervals_and_regressors_an_absolute_error() -> None:
    lines = feedback.summarise([("d1", "a", "a")] * 8 + [("d1", "a", "b")] * 2 + [("d2", "b", "b")])
    assert [(x.key, x.labelled, x.correct) for x in lines] == [("d1", 10, 8), ("d2", 1, 1)]
    d1 = lines[0]
    assert d1.accuracy == pytest.approx(0.8)
    assert d1.low == pytest.approx(0.4902, abs=1e-3) and d1.high == pytest.approx(0.9433, abs=1e-3)  # Wilson
    (errors,) = feedback.summarise([("v", "1.5", "1.0"), ("v", "2.0", "3.0"), ("v", "x", "1")], regression=True)
    assert errors.labelled == 2 and errors.mean_abs_error == pytest.approx(0.75) and errors.accuracy is None
    assert errors.low is not None and errors.high is not None and errors.low <= 0.75 <= errors.high


def _samples(device: str, seq: int, rows: list[tuple[str, str]], ids: bool = True) -> pb.SampleBatch:
    return pb.SampleBatch(
        schema_version=1, device_id=device, seq=seq, model=pb.ModelRef(model_id="m", version="1"),
        samples=[pb.Sample(input=[0.0], prediction=p, label=label, ts_ms=NOW_MS - 60_000 + i,
                           prediction_id=f"{device}-{seq}-{i}" if ids else "")
                 for i, (p, label) in enumerate(rows)],
    )  # fmt: skip


def test_labels_from_the_topic_and_the_api_join_sampled_predictions(engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")
    enroll(engine, "d1", "d2")
    ingestor = Ingestor(engine, clock=lambda: NOW_MS)
    topic = device_topic("d1", Channel.FEEDBACK)
    late = pb.FeedbackBatch(schema_version=1, device_id="d1", seq=1, items=[
        pb.Feedback(prediction_id="d1-1-0", label="a"), pb.Feedback(prediction_id="d1-1-1", label="a"),
        pb.Feedback(prediction_id="d1-1-2", label="b"), pb.Feedback(prediction_id="", label="a"),
    ])  # fmt: skip
    ingestor.process([(topic, late.SerializeToString())])  # before its samples: kept for them
    d1 = _samples("d1", 1, [("a", ""), ("b", ""), ("b", ""), ("a", "")])
    d2 = _samples("d2", 1, [("a", "a"), ("a", "b")], ids=False)  # the cloud names them "1:0", "1:1"
    ingestor.process([
        (device_topic("d1", Channel.SAMPLES), d1.SerializeToString()),
        (device_topic("d2", Channel.SAMPLES), d2.SerializeToString()),
        (topic, late.SerializeToString()),  # a redelivery changes nothing
    ])  # fmt: skip
    with Session(engine) as session:
        assert feedback.record(session, [feedback.Label("d2", "1:1", "a"), feedback.Label("d2", "1:0", "b")]) == 2
        session.commit()
        by_device = {x.key: x for x in feedback.field_accuracy(session, "m", "1", by="device")}
        overall = feedback.field_accuracy(session, "m", None, by="version")
        windows = feedback.field_accuracy(session, "m", "1", by="window", window_ms=3_600_000)
        with pytest.raises(InvalidRequestError, match="device id"):
            feedback.record(session, [feedback.Label("bad/id", "x", "a")])
    # d1: 3 labels from the topic (2 of 3 right); its 4th sample has none. d2: the API's labels take the
    # place of the device's own ("1:0" truth b, predicted a; "1:1" truth a, predicted a)
    assert (by_device["d1"].labelled, by_device["d1"].correct) == (3, 2)
    assert (by_device["d2"].labelled, by_device["d2"].correct) == (2, 1)
    assert [(x.key, x.labelled, x.correct) for x in overall] == [("1", 5, 3)]
    assert sum(x.labelled for x in windows) == 5


def test_horvitz_thompson_undoes_a_sampler_that_favours_hard_rows() -> None:
    """A fleet serves 10,000 rows: 2,000 hard ones (50 % right) and 8,000 easy ones (95 % right), so the
    true accuracy is 0.86. The sampler keeps hard rows with p = 0.2 and easy ones with p = 0.02."""
    import random

    rng = random.Random(11)
    triples: list[tuple[str, str, str, float | None]] = []
    for n, right, p in ((2_000, 0.5, 0.2), (8_000, 0.95, 0.02)):  # hard rows, then easy ones
        for _ in range(n):
            if rng.random() < p:
                truth = "a" if rng.random() < right else "b"
                triples.append(("v", "a", truth, p))
    (line,) = feedback.summarise(triples)
    assert line.accuracy is not None and line.accuracy < 0.7  # the plain mean: mostly hard rows
    assert line.weighted == pytest.approx(0.86, abs=0.03)
    assert line.weighted_low is not None and line.weighted_high is not None
    assert line.weighted_low <= 0.86 <= line.weighted_high
    assert line.effective_n is not None and line.effective_n < line.labelled  # unequal weights cost precision
    # without probabilities (older agents) every sample weighs 1: the weighted view is the plain one
    (plain,) = feedback.summarise([(k, pr, t) for k, pr, t, _ in triples])
    assert plain.weighted == pytest.approx(plain.accuracy) and plain.effective_n == pytest.approx(plain.labelled)
    (errors,) = feedback.summarise([("v", "1", "2", 0.5), ("v", "1", "1", 0.05)], regression=True)
    assert errors.mean_abs_error == pytest.approx(0.5) and errors.weighted == pytest.approx(2 / 22)


def test_ingested_samples_carry_their_inclusion_probability_into_the_weighted_view(engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")
    enroll(engine, "d1")
    ingestor = Ingestor(engine, clock=lambda: NOW_MS)
    batch = _samples("d1", 1, [("a", "a"), ("a", "b"), ("a", "a")])
    for sample, p in zip(batch.samples, (0.5, 0.05, 0.5), strict=True):
        sample.inclusion_probability, sample.confidence = p, 0.9
    ingestor.process([(device_topic("d1", Channel.SAMPLES), batch.SerializeToString())])
    with Session(engine) as session:
        (line,) = feedback.field_accuracy(session, "m", "1", by="version")
    assert (line.labelled, line.correct) == (3, 2)
    assert line.weighted == pytest.approx(4 / 24)  # the wrong row stands for 20 rows, the right ones for 2 each
