"""The embedded broker's life cycle: ports, start/stop/restart, clean shutdown with clients attached; and a
broadcast that a concurrent SUBSCRIBE used to cut short."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from amqtt.broker import Broker
from support import port_accepts, wait_until

from cloud.errors import BrokerStartError
from cloud.mqtt.amqtt_fixes import EdgeFleetAmqttBroker
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


class _SlowTopicCheck(EdgeFleetAmqttBroker):
    """A topic check that yields to the event loop, as our auth plugin's does (it reads the database)."""

    async def _topic_filtering(self, *args: Any, **kwargs: Any) -> bool:
        await asyncio.sleep(0.002)
        return True


class _AmqttBroadcast(_SlowTopicCheck):
    """amqtt 0.12.1's own `_run_broadcast` (iterating the live subscriptions), to show what we fixed."""

    _run_broadcast = Broker._run_broadcast


@pytest.mark.parametrize("broker_class", [_AmqttBroadcast, _SlowTopicCheck], ids=["amqtt", "edgefleet"])
def test_a_subscribe_during_a_broadcast_loses_nothing(broker_class: type[Broker], make_transport: Any) -> None:
    """Two subscribers on different filters while a third client keeps subscribing: with amqtt's own
    broadcast loop the new filters change the dict it iterates across an await, and the rest of that
    message's subscribers get nothing."""
    broker = EmbeddedBroker()
    broker.broker_class = broker_class
    with broker:
        _, hash_inbox = make_transport("t/#", broker=broker)
        _, plus_inbox = make_transport("t/+", broker=broker)
        churn, _ = make_transport(broker=broker)
        publisher, _ = make_transport(broker=broker)
        for i in range(40):
            publisher.publish("t/x", str(i).encode(), qos=1)
            churn.subscribe(f"s/{i}")
        patience = 3 if broker_class is _AmqttBroadcast else 10  # the broken loop never completes: do not wait long
        complete = wait_until(lambda: len(hash_inbox) == 40 and len(plus_inbox) == 40, timeout_s=patience)
        if broker_class is _AmqttBroadcast:
            assert not complete, "amqtt's broadcast loop no longer loses messages: drop our copy of it"
        else:
            assert complete, (len(hash_inbox), len(plus_inbox))


class _CountingMatches(EdgeFleetAmqttBroker):
    """Counts the filter matches the broker makes (its cost per message grew with the fleet)."""

    matches = 0

    def _matches(self, topic: str, a_filter: str) -> bool:
        type(self).matches += 1
        return super()._matches(topic, a_filter)


def test_a_message_to_one_device_is_not_matched_against_every_devices_filters(make_transport: Any) -> None:
    """Each device holds filters of its own: a message on one device's topic must not be matched against
    all of them (amqtt did, and matched each SUBSCRIBE against every retained message: at 500 devices the
    embedded broker fell behind and 468 devices never got their desired state). Delivery is unchanged: the
    exact filter and the wildcard one get the message, the other devices nothing, retained state arrives."""
    broker = EmbeddedBroker()
    broker.broker_class = _CountingMatches
    with broker:
        publisher, _ = make_transport(broker=broker)
        publisher.publish("d/0/desired", b"kept", qos=1, retain=True)
        devices = [make_transport(f"d/{i}/desired", f"d/{i}/cmd", broker=broker)[1] for i in range(12)]
        _, watcher = make_transport("d/+/cmd", broker=broker)
        assert devices[0].wait_for(1, timeout_s=10) and devices[0].messages[0] == ("d/0/desired", b"kept")
        _CountingMatches.matches = 0
        publisher.publish("d/3/cmd", b"one", qos=1)
        assert devices[3].wait_for(1, timeout_s=10) and watcher.wait_for(1, timeout_s=10)
        assert _CountingMatches.matches <= 2, _CountingMatches.matches  # the wildcard filter, not 25
        assert [len(inbox) for inbox in devices] == [1, 0, 0, 1] + [0] * 8
