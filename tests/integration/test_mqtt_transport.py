"""PahoTransport against real brokers: a private Mosquitto and the embedded amqtt broker."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_round_trip_on_each_broker(each_broker, make_transport) -> None:
    _sub, inbox = make_transport("ef/test/#", broker=each_broker)
    pub, _ = make_transport(broker=each_broker)
    pub.publish("ef/test/a", b"hello", qos=1)
    pub.publish("ef/test/b", b"", qos=0)
    assert inbox.wait_for(2)
    assert sorted(inbox.messages) == [("ef/test/a", b"hello"), ("ef/test/b", b"")]
