"""Gate figures read back from telemetry windows ingested the real way, per model version and period."""

from __future__ import annotations

import bisect
import time

from sqlalchemy import Engine, event
from sqlmodel import Session, select
from support.enrollment import enroll

from cloud.db.tables import TelemetryRecord
from cloud.monitoring import Ingestor
from cloud.rollout.figures import figures_for
from cloud.rollout.gates import ArmFigures, Decision, GatePolicy, InstallTally, judge
from protocols.telemetry_bins import LATENCY_BOUNDS_US
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

NOW = int(time.time() * 1000)


def window(
    device_id: str, seq: int, version: str, *, ok: int, errors: int, slow: bool, labels: list[int],
    shadow: tuple[int, int, int] = (0, 0, 0),
) -> bytes:  # fmt: skip
    latency = [0, 0, ok] if slow else [ok, 0, 0]  # bins <=100 µs, <=200 µs, above
    compared, agreed, dropped = shadow
    return pb.TelemetryWindow(
        schema_version=1, device_id=device_id, seq=seq,
        window_start_ms=NOW - 60_000 + seq * 1000, window_end_ms=NOW - 59_000 + seq * 1000,
        model=pb.ModelRef(model_id="m", version=version, sequence=int(version)),
        inference_count=ok, error_count=errors,
        latency_us=pb.Histogram(bounds=[100, 200], counts=latency),
        predictions=pb.PredictionProfile(labels=["cat", "dog"], counts=labels),
        shadow_compared=compared, shadow_agreed=agreed, shadow_dropped=dropped,
    ).SerializeToString()  # fmt: skip


def test_the_figures_read_plain_rows_not_orm_objects(any_engine: Engine) -> None:
    """A wave's baseline covers a day of its devices' windows: as TelemetryRecord objects (every column, the
    feature sketches too, each object tracked by the session) 10,500 windows cost the controller 2.7 s of CPU
    holding the interpreter lock, ingestion waiting behind it; read as rows of the columns the figures need,
    0.54 s. The session tracks none of them, and the figures are the same."""
    enroll(any_engine, "a", "b")
    messages = [("a", window("a", seq, "1", ok=50, errors=1, slow=False, labels=[30, 20])) for seq in (1, 2)]
    messages.append(("b", window("b", 1, "1", ok=100, errors=0, slow=True, labels=[40, 60])))
    Ingestor(any_engine).process([(device_topic(d, Channel.TELEMETRY), m) for d, m in messages])
    loaded: list[object] = []

    def on_load(record: object, _context: object) -> None:
        loaded.append(record)

    event.listen(TelemetryRecord, "load", on_load)
    try:
        with Session(any_engine) as session:
            figures = figures_for(session, ["a", "b"], "m", "1", since_ms=0)
    finally:
        event.remove(TelemetryRecord, "load", on_load)
    assert loaded == [], "the figures made TelemetryRecord objects"
    assert (figures.devices, figures.inferences, figures.errors, figures.shadow_compared) == (2, 200, 2, 0)
    assert figures.predictions == {"cat": 100, "dog": 100}
    assert figures.device_latency == {"a": [100, 0, 0], "b": [0, 0, 100]}
    assert figures.p95_latency_us is not None and figures.p95_latency_us >= 200  # half the calls in the top bin


def test_each_arm_sums_its_own_model_version_devices_and_period(any_engine: Engine) -> None:
    enroll(any_engine, "a", "b", "c")
    messages = [
        ("a", window("a", 1, "1", ok=100, errors=0, slow=False, labels=[50, 50])),
        ("a", window("a", 2, "2", ok=90, errors=10, slow=True, labels=[80, 10])),
        ("b", window("b", 1, "2", ok=100, errors=0, slow=True, labels=[70, 30])),
        ("c", window("c", 1, "2", ok=500, errors=0, slow=False, labels=[250, 250])),  # not in the arm
    ]
    Ingestor(any_engine).process([(device_topic(d, Channel.TELEMETRY), m) for d, m in messages])
    with Session(any_engine) as session:
        new = figures_for(session, ["a", "b"], "m", "2", since_ms=0)
        old = figures_for(session, ["a", "b"], "m", "1", since_ms=0)
        later = figures_for(session, ["a", "b"], "m", "2", since_ms=NOW)
        assert figures_for(session, [], "m", "2", since_ms=0) == ArmFigures()
    assert (new.devices, new.inferences, new.errors) == (2, 190, 10)
    assert new.predictions == {"cat": 150, "dog": 40}
    assert new.p95_latency_us is not None and new.p95_latency_us >= 200  # all in the top bin (its lower edge)
    assert (old.devices, old.inferences, old.predictions) == (1, 100, {"cat": 50, "dog": 50})
    assert old.p95_latency_us is not None and old.p95_latency_us <= 100
    assert later == ArmFigures()  # nothing ended after NOW


def test_shadow_comparisons_are_stored_and_summed_and_low_agreement_breaches_the_gate(any_engine: Engine) -> None:
    enroll(any_engine, "a", "b")
    messages = [
        ("a", window("a", 1, "2", ok=300, errors=0, slow=False, labels=[150, 150], shadow=(30, 12, 2))),
        ("b", window("b", 1, "2", ok=300, errors=0, slow=False, labels=[150, 150], shadow=(20, 8, 0))),
        ("b", window("b", 2, "1", ok=300, errors=0, slow=False, labels=[150, 150])),  # an agent before probation
    ]
    Ingestor(any_engine).process([(device_topic(d, Channel.TELEMETRY), m) for d, m in messages])
    with Session(any_engine) as session:
        stored = {(r.device_id, r.seq): r for r in session.exec(select(TelemetryRecord))}
        new = figures_for(session, ["a", "b"], "m", "2", since_ms=0)
        old = figures_for(session, ["a", "b"], "m", "1", since_ms=0)
    a, b_old = stored[("a", 1)], stored[("b", 2)]
    assert (a.shadow_compared, a.shadow_agreed, a.shadow_dropped) == (30, 12, 2)
    assert (b_old.shadow_compared, b_old.shadow_agreed, b_old.shadow_dropped) == (0, 0, 0)
    assert (new.shadow_compared, new.shadow_agreed) == (50, 20)
    assert (old.shadow_compared, old.shadow_agreed) == (0, 0)

    policy = GatePolicy(min_devices=2, min_inferences=100, min_shadow_agreement=0.9)
    verdict = judge(policy, InstallTally(targets=2, failed=0), new, old)
    assert [(g.gate, g.value) for g in verdict.breaches] == [("shadow_agreement", 0.4)]
    assert verdict.decision is Decision.BREACH
    quiet = judge(policy, InstallTally(targets=2, failed=0), old, None)  # nothing shadowed: no evidence
    assert "shadow_agreement" not in [g.gate for g in quiet.breaches]


def test_a_window_claiming_more_shadow_agreement_than_comparisons_is_dropped(any_engine: Engine) -> None:
    enroll(any_engine, "a")
    bad = window("a", 1, "2", ok=10, errors=0, slow=False, labels=[5, 5], shadow=(3, 4, 0))
    ingestor = Ingestor(any_engine)
    ingestor.process([(device_topic("a", Channel.TELEMETRY), bad)])
    assert ingestor.stats.implausible == 1


def test_one_device_claiming_a_flood_of_clean_inferences_cannot_dilute_the_others_errors(any_engine: Engine) -> None:
    """Four honest canaries fail 20 % of their calls; a fifth (compromised) claims 10,000,000 clean ones. Summed
    as they come, the arm's error rate is ~0.001 % and the gate passes a bad model; with each device capped at
    MAX_DEVICE_SHARE median devices, the error gate still breaches."""
    honest = ["h1", "h2", "h3", "h4"]
    enroll(any_engine, *honest, "liar")
    messages = [(d, window(d, 1, "2", ok=80, errors=20, slow=False, labels=[40, 40])) for d in honest]
    messages.append(("liar", window("liar", 1, "2", ok=10_000_000, errors=0, slow=False, labels=[5_000_000] * 2)))
    Ingestor(any_engine).process([(device_topic(d, Channel.TELEMETRY), m) for d, m in messages])
    with Session(any_engine) as session:
        new = figures_for(session, [*honest, "liar"], "m", "2", since_ms=0)
        alone = figures_for(session, honest, "m", "2", since_ms=0)
    assert alone.errors == 80 and alone.inferences == 320
    assert new.devices == 5 and new.errors == 80
    assert new.inferences <= 320 + 4 * 100  # the liar counts for at most 4 median devices
    policy = GatePolicy(min_devices=5, min_inferences=100, max_error_rate=0.05)
    verdict = judge(policy, InstallTally(targets=5, failed=0), new, None)
    assert next(g for g in verdict.gates if g.gate == "error_rate").decision is Decision.BREACH


def test_even_traffic_is_summed_as_it_comes(any_engine: Engine) -> None:
    enroll(any_engine, "a", "b", "c")
    messages = [(d, window(d, 1, "2", ok=100 + 50 * i, errors=i, slow=False, labels=[60, 40 + 50 * i]))
                for i, d in enumerate(["a", "b", "c"])]  # fmt: skip
    Ingestor(any_engine).process([(device_topic(d, Channel.TELEMETRY), m) for d, m in messages])
    with Session(any_engine) as session:
        figures = figures_for(session, ["a", "b", "c"], "m", "2", since_ms=0)
    assert (figures.inferences, figures.errors) == (450, 3)
    assert figures.predictions == {"cat": 180, "dog": 270}


def timed_window(device_id: str, seq: int, version: str, latency_us: float, rows: int,
                 shadow: tuple[int, int] = (0, 0)) -> bytes:  # fmt: skip
    """A window in the agents' compact encoding: every row took `latency_us`."""
    bucket = bisect.bisect_left(LATENCY_BOUNDS_US, latency_us)
    return pb.TelemetryWindow(
        schema_version=1, device_id=device_id, seq=seq,
        window_start_ms=NOW - 60_000 + seq * 1000, window_end_ms=NOW - 59_000 + seq * 1000,
        model=pb.ModelRef(model_id="m", version=version, sequence=int(version)),
        inference_count=rows, latency_p50_us=latency_us, latency_p95_us=latency_us, latency_bins=[bucket, rows],
        predictions=pb.PredictionProfile(labels=["cat", "dog"], counts=[rows // 2, rows - rows // 2]),
        shadow_compared=shadow[0], shadow_agreed=shadow[1],
    ).SerializeToString()  # fmt: skip


def test_a_slower_or_disagreeing_canary_pair_is_stopped_on_its_first_windows(any_engine: Engine) -> None:
    """Two canaries' first windows (12 rows each, the agent's first window is 10) against gates that want 5
    devices and 50 inferences: 4x slower, or agreeing with the previous model on 5 of 24 shadowed inputs,
    breaches at once; one device slow (its load) or one device disagreeing (its inputs) waits."""
    enroll(any_engine, "a", "b")
    messages = [(d, timed_window(d, 1, "1", 1000.0, 300)) for d in ("a", "b")]  # the previous model
    messages += [(d, timed_window(d, 2, "2", 4000.0, 12)) for d in ("a", "b")]
    messages += [(d, timed_window(d, 3, "3", 900.0, 12, shadow=(12, 2 + i))) for i, d in enumerate("ab")]
    messages += [("a", timed_window("a", 4, "4", 9000.0, 30)), ("b", timed_window("b", 4, "4", 900.0, 30))]
    messages += [("a", timed_window("a", 5, "5", 900.0, 15, shadow=(15, 0))),
                 ("b", timed_window("b", 5, "5", 900.0, 15, shadow=(15, 15)))]  # fmt: skip
    Ingestor(any_engine).process([(device_topic(d, Channel.TELEMETRY), m) for d, m in messages])
    policy = GatePolicy(min_devices=5, min_inferences=50)
    with Session(any_engine) as session:
        baseline = figures_for(session, ["a", "b"], "m", "1", since_ms=0)
        arms = {v: figures_for(session, ["a", "b"], "m", v, since_ms=0) for v in ("2", "3", "4", "5")}
    verdicts = {v: judge(policy, InstallTally(targets=2, failed=0), f, baseline) for v, f in arms.items()}
    assert [g.gate for g in verdicts["2"].breaches] == ["p95_latency"]
    assert [g.gate for g in verdicts["3"].breaches] == ["shadow_agreement"]
    assert verdicts["4"].decision is Decision.WAIT and verdicts["5"].decision is Decision.WAIT
    assert all("early" in v.breaches[0].detail for v in (verdicts["2"], verdicts["3"]))


def test_empty_windows_neither_count_as_devices_nor_cap_the_others(any_engine: Engine) -> None:
    """An agent sends an empty window for a model it just activated until its first requests come. Two canaries'
    first 10-row windows beside three empty ones are 2 devices and 20 calls, and the early shift breach fires
    on them (counted as 5 devices, the empty ones pulled the median to 0 and capped each canary at 4 calls: 8
    predictions, too few, and the gates waited a telemetry period more); one canary's calls beside empty windows
    are one device, below the early floor of two."""
    canaries = ["a", "b", "c", "d", "e"]
    enroll(any_engine, *canaries)
    messages = [(d, window(d, 1, "1", ok=100, errors=0, slow=False, labels=[50, 50])) for d in canaries]
    messages += [(d, window(d, 2, "2", ok=10 if d in "ab" else 0, errors=0, slow=False,
                            labels=[10, 0] if d in "ab" else [0, 0])) for d in canaries]  # fmt: skip
    messages += [(d, window(d, 3, "3", ok=10 if d == "a" else 0, errors=0, slow=False,
                            labels=[10, 0] if d == "a" else [0, 0])) for d in canaries]  # fmt: skip
    Ingestor(any_engine).process([(device_topic(d, Channel.TELEMETRY), m) for d, m in messages])
    policy = GatePolicy(min_devices=5, min_inferences=50)
    with Session(any_engine) as session:
        baseline = figures_for(session, canaries, "m", "1", since_ms=0)
        two, one = (figures_for(session, canaries, "m", v, since_ms=0) for v in ("2", "3"))
    assert (two.devices, two.inferences, two.predictions) == (2, 20, {"cat": 20, "dog": 0})
    assert len(two.device_latency) == 2
    verdict = judge(policy, InstallTally(targets=5, failed=0), two, baseline)
    assert [g.gate for g in verdict.breaches] == ["prediction_shift"] and "early" in verdict.breaches[0].detail
    assert (one.devices, one.inferences) == (1, 10)
    assert judge(policy, InstallTally(targets=5, failed=0), one, baseline).decision is Decision.WAIT
