"""A new subscriber must receive only the retained messages its own filters match.

amqtt 0.12.1 breaks this (on connect it replays retained messages for every filter any client ever
subscribed to); `EdgeFleetAmqttBroker` fixes it. The same test runs on Mosquitto and on the embedded
broker; a last test runs it on amqtt's own Broker and asserts the leak is still there, so that we notice
when upstream fixes it and the override can go.
"""

from __future__ import annotations

import amqtt.broker
import pytest

from cloud.mqtt.amqtt_fixes import EdgeFleetAmqttBroker
from cloud.mqtt.broker import EmbeddedBroker
from protocols.topics import Channel, device_subscriptions, device_topic

pytestmark = pytest.mark.integration


def received_by_new_subscriber(broker, make_transport) -> list[tuple[str, bytes]]:
    """The issue's scenario: after one client subscribed to m/+/b, a new client subscribes to z/z/z only."""
    _witness, seen = make_transport("#", broker=broker)
    pub, _ = make_transport(broker=broker)
    for topic in ("m/a/b", "m/z/b", "z/z/z"):
        pub.publish(topic, topic.encode(), qos=1, retain=True)
    assert seen.wait_for(3)  # fanned out: what follows meets settled retained state (amqtt fans out later)
    _wide, wide_inbox = make_transport("m/+/b", broker=broker)
    assert wide_inbox.wait_for(2)
    _narrow, narrow_inbox = make_transport("z/z/z", broker=broker)
    assert narrow_inbox.wait_for(1)
    pub.publish("z/z/z", b"sentinel", qos=1)  # a live message: anything retained would have come before it
    assert narrow_inbox.wait_for(2)
    return narrow_inbox.messages


def test_new_subscriber_gets_only_its_own_retained_messages(each_broker, make_transport) -> None:
    assert received_by_new_subscriber(each_broker, make_transport) == [("z/z/z", b"z/z/z"), ("z/z/z", b"sentinel")]


def test_a_device_never_receives_another_devices_desired_state(each_broker, make_transport) -> None:
    _witness, seen = make_transport("ef/v1/default/dev/+/desired", broker=each_broker)
    cloud, _ = make_transport(broker=each_broker)
    for device in ("dev-a", "dev-b"):
        cloud.publish(device_topic(device, Channel.DESIRED), f"desired for {device}".encode(), retain=True)
    assert seen.wait_for(2)
    device_a, inbox_a = make_transport(broker=each_broker, connect=False)
    for topic_filter, qos in device_subscriptions("dev-a"):
        device_a.subscribe(topic_filter, qos)
    device_a.start()
    assert device_a.wait_connected(10)
    assert inbox_a.wait_for(1)
    # dev-b connects after dev-a's filters exist on the broker: the leaky broker would hand it dev-a's state
    device_b, inbox_b = make_transport(*[f for f, _ in device_subscriptions("dev-b")], broker=each_broker)
    assert inbox_b.wait_for(1)
    cloud.publish(device_topic("dev-b", Channel.COMMAND), b"sentinel")
    assert inbox_b.wait_for(2)
    assert inbox_b.messages == [
        (device_topic("dev-b", Channel.DESIRED), b"desired for dev-b"),
        (device_topic("dev-b", Channel.COMMAND), b"sentinel"),
    ]
    assert inbox_a.messages == [(device_topic("dev-a", Channel.DESIRED), b"desired for dev-a")]


class UpstreamRetainedBroker(EdgeFleetAmqttBroker):
    """Our broker with amqtt's own retained-message replay put back (and every other fix kept)."""

    _publish_retained_messages_for_subscription = amqtt.broker.Broker._publish_retained_messages_for_subscription


class UpstreamSubscriptionsBroker(EdgeFleetAmqttBroker):
    """Our broker with amqtt's own subscription handling put back: no shared subscriptions."""

    add_subscription = amqtt.broker.Broker.add_subscription
    _del_subscription = amqtt.broker.Broker._del_subscription
    _del_all_subscriptions = amqtt.broker.Broker._del_all_subscriptions
    _broadcast_message = amqtt.broker.Broker._broadcast_message


def embedded_broker_with(broker_class: type[amqtt.broker.Broker]) -> EmbeddedBroker:
    broker = EmbeddedBroker()
    broker.broker_class = broker_class
    return broker


def test_unpatched_amqtt_still_leaks_retained_messages(make_transport) -> None:
    with embedded_broker_with(UpstreamRetainedBroker) as broker:
        received = received_by_new_subscriber(broker, make_transport)
    leaked = {topic for topic, _ in received} - {"z/z/z"}
    assert leaked == {"m/a/b", "m/z/b"}, (
        "amqtt no longer leaks retained messages to other clients: "
        "EdgeFleetAmqttBroker._publish_retained_messages_for_subscription can go"
    )


def test_unpatched_amqtt_still_lacks_shared_subscriptions(make_transport) -> None:
    with embedded_broker_with(UpstreamSubscriptionsBroker) as broker:
        _worker, inbox = make_transport("$share/g/ef/s", "ef/sentinel", broker=broker)
        pub, _ = make_transport(broker=broker)
        pub.publish("ef/s", b"for the group")
        pub.publish("ef/sentinel", b"sentinel")
        assert inbox.wait_for(1)
        messages = inbox.messages
    assert messages == [("ef/sentinel", b"sentinel")], (
        "amqtt now delivers $share subscriptions: EdgeFleetAmqttBroker's shared-subscription code can go"
    )
