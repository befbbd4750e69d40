"""Sampler hints from drift alerts (cloud.monitoring.hints): the devices a drift alert names get signed
hints of their over-filled bins on their `cmd` topic, refreshed while the alert holds, cleared after."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session
from support.drift_windows import ingest_drift_windows
from support.enrollment import enroll

from cloud.monitoring.alert_monitor import AlertMonitor
from cloud.monitoring.hints import SamplerHinter, hinted_bins
from cloud.rollout.director import Director
from protocols.commands import verify_command
from protocols.roots import RootOfTrust
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

NOW_MS = 1_700_000_000_000


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.sent.append((topic, payload, qos, retain))


def _hint(director: Director, sent: tuple[str, bytes, int, bool], last: int, now: int) -> pb.Command:
    topic, payload, qos, retain = sent
    assert topic == device_topic("odd", Channel.COMMAND) and qos == 1 and not retain
    root = RootOfTrust.from_chain(director.trust)
    return verify_command(pb.SignedCommand.FromString(payload), root, device_id="odd", last_counter=last, now_ms=now)


def test_a_drift_alerts_devices_get_their_over_filled_bins_refreshed_then_cleared(
    engine: Engine, register, director: Director
) -> None:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        register(session, "m")
    devices = ["d0", "d1", "d2", "odd"]
    enroll(engine, *devices)
    ingest_drift_windows(engine, devices, {"odd"}, NOW_MS - 120_000)
    clock = [NOW_MS]
    out = Recorder()
    hinter = SamplerHinter(out, lambda: director, ttl_s=900, clock=lambda: clock[0])
    monitor = AlertMonitor(engine, clock=lambda: clock[0], hinter=hinter)

    (raised,) = monitor.tick()
    assert raised.alert["devices"] == ["odd"]
    (first,) = out.sent  # only the device the alert names
    hint = _hint(director, first, 0, clock[0])
    assert hint.counter == NOW_MS and hint.expires_at_ms == NOW_MS + 900_000
    assert (hint.sampler_hint.model.model_id, hint.sampler_hint.model.version) == ("m", "1")
    assert list(zip(hint.sampler_hint.features, hint.sampler_hint.bins, strict=True)) == [(1, 2), (1, 3)]

    clock[0] += 60_000
    monitor.tick()
    assert len(out.sent) == 1  # unchanged and not due: nothing sent
    clock[0] += 240_000  # a third of the lifetime since the first: refreshed, a newer counter
    monitor.tick()
    refresh = _hint(director, out.sent[-1], hint.counter, clock[0])
    assert len(out.sent) == 2 and list(refresh.sampler_hint.bins) == [2, 3]

    clock[0] = NOW_MS + 2 * 3_600_000  # the drift is out of the lookback: the alert clears, so does the hint
    (cleared,) = monitor.tick()
    assert cleared.event == "alert.cleared"
    clear = _hint(director, out.sent[-1], refresh.counter, clock[0])
    assert len(out.sent) == 3 and len(clear.sampler_hint.features) == 0
    assert monitor.counters()["hints_sent"] == 3
    monitor.tick()
    assert len(out.sent) == 3


def test_hinted_bins_are_the_most_over_filled_of_the_drifted_features_only() -> None:
    reference = pb.ReferenceProfile()
    reference.features.add(index=0, counts=[25, 25, 25, 25])
    reference.features.add(index=4, counts=[0, 50, 50, 0])
    reference.features.add(index=5, counts=[25, 25, 25, 25])
    counts = {0: [1, 1, 1, 97], 4: [5, 45, 45, 5], 5: [1, 1, 1, 97], 9: [1, 2]}
    # feature 4's empty reference bins, filled, count as over-filled; feature 5 did not drift; 9 has no profile
    assert hinted_bins(reference, counts, [0, 4, 9]) == ((0, 3), (4, 0), (4, 3))
    assert hinted_bins(reference, {0: [1, 1]}, [0]) == ()  # other bins than the reference: nothing
    wide = pb.ReferenceProfile()
    wide.features.add(index=0, counts=[1] * 10)
    assert hinted_bins(wide, {0: [0, 0, 0, 0, 0, 0, 4, 5, 6, 7]}, [0]) == ((0, 7), (0, 8), (0, 9))  # at most 3
