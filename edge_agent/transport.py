"""The message transport every EdgeFleet process talks through, and an in-memory adapter.

`Transport` is the small interface the agent (and the cloud) use for MQTT; the real adapter is
`edge_agent.paho_transport.PahoTransport`. `MemoryBroker`/`MemoryTransport` deliver in-process with MQTT's
retained-message and wildcard semantics, for unit tests of code above the transport.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edge_agent.errors import TransportError
from protocols.topics import topic_matches

__all__ = [
    "ConnectHandler",
    "SubscribedHandler",
    "MemoryBroker",
    "MemoryTransport",
    "MessageHandler",
    "Transport",
    "TransportError",  # defined in edge_agent.errors (the agent's tree); imported from here by the cloud
    "Will",
]

MessageHandler = Callable[[str, bytes], None]
ConnectHandler = Callable[[], None]
SubscribedHandler = Callable[[str, bool], None]  # (topic filter, granted) when its SUBACK comes


@dataclass(frozen=True)
class Will:
    """The message the broker publishes for us when we vanish without saying goodbye."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Transport(Protocol):
    def start(self) -> None:
        """Begin connecting; reconnects on its own until stop()."""

    def stop(self) -> None: ...

    def wait_connected(self, timeout_s: float) -> bool: ...

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue a message; QoS 1 messages published while offline are sent after reconnecting."""

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe now if connected, and again after every reconnect."""

    def unsubscribe(self, topic_filter: str) -> None:
        """Stop receiving topic_filter's messages, now and after reconnects (a filter never subscribed: no-op)."""

    def set_message_handler(self, handler: MessageHandler) -> None:
        """handler(topic, payload) runs on the transport's thread: hand work off, return quickly."""

    def set_connect_handler(self, handler: ConnectHandler) -> None:
        """Called after every (re)connect, once subscriptions are restored."""

    def set_subscribed_handler(self, handler: SubscribedHandler) -> None:
        """handler(topic_filter, granted) runs on the transport's thread when the broker acknowledges a
        subscribe() sent on a live connection (those restored on reconnect: the connect handler)."""


class MemoryBroker:
    """In-process MQTT-like broker: wildcard matching and retained messages, delivery is synchronous."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._clients: list[MemoryTransport] = []
        self._retained: dict[str, bytes] = {}

    def attach(self, client: MemoryTransport) -> None:
        with self._lock:
            self._clients.append(client)

    def detach(self, client: MemoryTransport) -> None:
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)
            if client.will is not None:
                self.publish(client.will.topic, client.will.payload, client.will.retain)

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        with self._lock:
            if retain:
                if payload:
                    self._retained[topic] = payload
                else:
                    self._retained.pop(topic, None)  # MQTT: an empty retained payload clears it
            receivers = [c for c in self._clients if c.accepts(topic)]
        for client in receivers:
            client.deliver(topic, payload)

    def retained_for(self, topic_filter: str) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(t, p) for t, p in self._retained.items() if topic_matches(topic_filter, t)]


class MemoryTransport:
    """A Transport over a MemoryBroker. `go_offline()`/`start()` simulate a lost and regained link."""

    def __init__(self, broker: MemoryBroker, will: Will | None = None) -> None:
        self.broker = broker
        self.will = will
        self._filters: dict[str, int] = {}
        self._online = False
        self._queued: list[tuple[str, bytes, bool]] = []
        self._on_message: MessageHandler = lambda _t, _p: None
        self._on_connect: ConnectHandler = lambda: None
        self._on_subscribed: SubscribedHandler = lambda _f, _granted: None

    @property
    def connected(self) -> bool:
        return self._online

    def start(self) -> None:
        self._online = True
        self.broker.attach(self)
        for topic_filter in list(self._filters):  # a retained message's handler may subscribe to more
            self._send_retained(topic_filter)
        queued, self._queued = self._queued, []
        for topic, payload, retain in queued:
            self.broker.publish(topic, payload, retain)
        self._on_connect()

    def stop(self) -> None:
        if self._online:
            self._online = False
            will, self.will = self.will, None  # a clean disconnect does not fire the will
            self.broker.detach(self)
            self.will = will

    def go_offline(self) -> None:
        """Drop the link as a network failure would: the will fires."""
        self._online = False
        self.broker.detach(self)

    def wait_connected(self, timeout_s: float) -> bool:
        return self._online

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if self._online:
            self.broker.publish(topic, payload, retain)
        elif qos > 0:
            self._queued.append((topic, payload, retain))

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self._filters[topic_filter] = qos
        if self._online:
            self._send_retained(topic_filter)
            self._on_subscribed(topic_filter, True)

    def unsubscribe(self, topic_filter: str) -> None:
        self._filters.pop(topic_filter, None)

    def set_message_handler(self, handler: MessageHandler) -> None:
        self._on_message = handler

    def set_connect_handler(self, handler: ConnectHandler) -> None:
        self._on_connect = handler

    def set_subscribed_handler(self, handler: SubscribedHandler) -> None:
        self._on_subscribed = handler

    def accepts(self, topic: str) -> bool:
        return self._online and any(topic_matches(f, topic) for f in self._filters)

    def deliver(self, topic: str, payload: bytes) -> None:
        self._on_message(topic, payload)

    def _send_retained(self, topic_filter: str) -> None:
        for topic, payload in self.broker.retained_for(topic_filter):
            self._on_message(topic, payload)
