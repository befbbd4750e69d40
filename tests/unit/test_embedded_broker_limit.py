"""`edgefleet sim run` and `demo --devices N` say when N is more than the embedded broker keeps up with."""

from __future__ import annotations

from cloud.mqtt.broker import EMBEDDED_BROKER_MAX_DEVICES, embedded_broker_limit


def test_up_to_the_measured_limit_nothing_is_said() -> None:
    assert embedded_broker_limit(1) is None
    assert embedded_broker_limit(EMBEDDED_BROKER_MAX_DEVICES) is None


def test_above_it_the_advice_is_mosquitto() -> None:
    said = embedded_broker_limit(EMBEDDED_BROKER_MAX_DEVICES + 1)
    assert said is not None
    assert f"above {EMBEDDED_BROKER_MAX_DEVICES} devices" in said and "--mqtt-url" in said and "Mosquitto" in said
