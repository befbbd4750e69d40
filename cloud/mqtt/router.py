"""The cloud's message router: subscribes to every device->cloud channel and routes each message by channel.

(Called `Inbox` before; renamed because `edge_agent/inbox.py` and a test recorder use that name too.)

Artifact requests go to the chunk server, everything else to ingestion; both queue the message and
return at once, as transport callbacks must. With a share group the subscriptions are MQTT 5 shared
subscriptions, so several cloud workers split the fleet's traffic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edge_agent.transport import Transport
from protocols.topics import Channel, TopicError, cloud_subscriptions, parse_device_topic

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]


class MessageRouter:
    def __init__(self, ingest: Handler, artifact_requests: Handler, *, share_group: str | None = None) -> None:
        self.ingest = ingest
        self.artifact_requests = artifact_requests
        self.subscriptions = cloud_subscriptions(share_group)
        self.unroutable = 0

    def attach(self, transport: Transport) -> None:
        """Route transport's messages here and subscribe (the transport re-subscribes after reconnects)."""
        transport.set_message_handler(self.route)
        for topic_filter, qos in self.subscriptions:
            transport.subscribe(topic_filter, qos)

    def route(self, topic: str, payload: bytes) -> None:
        try:
            channel = parse_device_topic(topic).channel
        except TopicError as exc:
            self.unroutable += 1
            log.warning("ignoring message on %s: %s", topic, exc)
            return
        if channel is Channel.ARTIFACT_REQUEST:
            self.artifact_requests(topic, payload)
        else:
            self.ingest(topic, payload)
