"""The embedded broker's life cycle: ports, start/stop/restart, clean shutdown with clients attached."""

from __future__ import annotations

import logging

import pytest
from support import port_accepts

from cloud.errors import BrokerStartError
from cloud.mqtt.broker import EmbeddedBroker

pytestmark = pytest.mark.integration


def test_port_zero_picks_a_free_port_and_the_url_names_it() -> None:
    with EmbeddedBroker() as broker:
        assert broker.port > 0
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        assert broker.running and port_accepts(broker.host, broker.port)
    assert not broker.running
    assert not port_accepts(broker.host, broker.port)


def test_a_taken_port_is_a_clear_error_and_leaves_the_first_broker_alone(embedded_broker, make_transport) -> None:
    second = EmbeddedBroker(port=embedded_broker.port)
    with pytest.raises(BrokerStartError, match=f"could not listen on 127.0.0.1:{embedded_broker.port}"):
        second.start()
    assert not second.running
    second.stop()  # harmless after a failed start
    _sub, inbox = make_transport("ef/still", broker=embedded_broker)
    pub, _ = make_transport(broker=embedded_broker)
    pub.publish("ef/still", b"alive")
    assert inbox.wait_for(1)


def test_start_and_stop_are_idempotent() -> None:
    broker = EmbeddedBroker()
    broker.stop()  # never started: nothing to do
    assert broker.start() is broker
    port = broker.port
    assert broker.start() is broker and broker.port == port
    broker.stop()
    broker.stop()
    assert not broker.running


def test_restart_comes_back_on_the_same_port_without_retained_state(embedded_broker, make_transport) -> None:
    pub, _ = make_transport(broker=embedded_broker)
    pub.publish("ef/kept", b"x", retain=True)
    _probe, probe_inbox = make_transport("ef/kept", broker=embedded_broker)
    assert probe_inbox.wait_for(1)
    port = embedded_broker.port
    embedded_broker.restart()
    assert embedded_broker.port == port and port_accepts("127.0.0.1", port)
    _late, late_inbox = make_transport("ef/kept", "ef/sentinel", broker=embedded_broker)
    assert pub.wait_connected(10)
    pub.publish("ef/sentinel", b"s")
    assert late_inbox.wait_for(1)
    assert late_inbox.messages == [("ef/sentinel", b"s")]  # amqtt keeps retained messages in memory only


def test_shutdown_with_clients_attached_is_clean(make_transport, caplog: pytest.LogCaptureFixture) -> None:
    # amqtt's handler clean-up can hang on Python 3.11 (see EdgeFleetAmqttBroker._stop_handler); the
    # scenario that showed it is repeated a few times, and stop() warns if shutdown does not finish
    caplog.set_level(logging.WARNING, logger="cloud.mqtt")  # the broker and its amqtt fixes
    for round_number in range(4):
        with EmbeddedBroker() as broker:
            pub, _ = make_transport(broker=broker)
            for topic in ("m/a/b", "m/z/b", "z/z/z"):
                pub.publish(topic, b"r", retain=True)
            _wide, wide = make_transport("m/+/b", broker=broker)
            _narrow, narrow = make_transport("z/z/z", broker=broker)
            assert wide.wait_for(2) and narrow.wait_for(1), f"round {round_number}"
    assert not [r for r in caplog.records if r.name.startswith("cloud.mqtt.")], caplog.text


def test_chatty_third_party_loggers_are_kept_at_warning() -> None:
    with EmbeddedBroker():
        assert logging.getLogger("amqtt").getEffectiveLevel() >= logging.WARNING
        assert logging.getLogger("transitions").getEffectiveLevel() >= logging.WARNING
