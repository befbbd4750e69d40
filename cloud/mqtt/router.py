"""The cloud's message router: subscribes to every device->cloud channel and routes each message by channel.

(Called `Inbox` before; renamed because `edge_agent/inbox.py` and a test recorder use that name too.)

Artifact requests go to the chunk server, everything else to ingestion; both queue the message and
return at once, as transport callbacks must. It subscribes to its own fleet's device topics only, so
another setup on the same broker is never heard; a message of another fleet that arrives anyway (a
broad subscription by someone else's client id, a misconfigured bridge) is counted and dropped. With a
share group the subscriptions are MQTT 5 shared subscriptions, so several cloud workers split the
fleet's traffic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edge_agent.transport import Transport
from protocols.topics import Channel, TopicError, cloud_subscriptions, parse_device_topic

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]


class MessageRouter:
    def __init__(
        self, ingest: Handler, artifact_requests: Handler, *, fleet: str, share_group: str | None = None
    ) -> None:
        self.ingest = ingest
        self.artifact_requests = artifact_requests
        self.fleet = fleet
        self.subscriptions = cloud_subscriptions(share_group, fleet=fleet)
        self.shared = share_group is not None
        self.unroutable = 0
        self.foreign = 0  # messages of another fleet

    def attach(self, transport: Transport) -> None:
        """Route transport's messages here and subscribe (the transport re-subscribes after reconnects)."""
        transport.set_message_handler(self.route)
        for topic_filter, qos in self.subscriptions:
            transport.subscribe(topic_filter, qos)

    def unshare(self, transport: Transport) -> None:
        """Trade the shared subscriptions for plain ones (a broker without them would deliver nothing):
        every worker then hears every message."""
        plain = cloud_subscriptions(fleet=self.fleet)
        for (shared_filter, _), (topic_filter, qos) in zip(self.subscriptions, plain, strict=True):
            transport.unsubscribe(shared_filter)
            transport.subscribe(topic_filter, qos)
        self.subscriptions, self.shared = plain, False

    def route(self, topic: str, payload: bytes) -> None:
        try:
            parsed = parse_device_topic(topic)
        except TopicError as exc:
            self.unroutable += 1
            log.warning("ignoring message on %s: %s", topic, exc)
            return
        if parsed.fleet != self.fleet:
            self.foreign += 1
            log.debug("ignoring a message of fleet %s on %s", parsed.fleet, topic)
            return
        channel = parsed.channel
        if channel is Channel.ARTIFACT_REQUEST:
            self.artifact_requests(topic, payload)
        else:
            self.ingest(topic, payload)
