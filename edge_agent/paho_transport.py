"""`PahoTransport`: the `Transport` interface over paho-mqtt 2.x, for devices and cloud workers alike.

Behaviour worth knowing:
* URLs are `mqtt://host[:1883]` or `mqtts://host[:8883]` (TLS, optional `tls_ca` bundle).
* paho's network thread (`loop_start`) connects, and reconnects with exponential backoff, until `stop()`.
* Subscriptions are (re)sent in `on_connect`, so a reconnect restores them. `connected` turns true only
  once the broker has acknowledged them; the connect handler runs at that moment.
* QoS 1 publishes made while offline stay in paho's queue (at most `max_queued`) and are sent after the
  next connect, whatever `clean_start` says; QoS 0 publishes made while offline are dropped.
* MQTT 5 is the default. A broker that only speaks 3.1.1 (the embedded amqtt broker) answers
  "unsupported protocol version"; we then switch to 3.1.1 on the same client, as paho itself does when
  it steps down from 3.1.1 to 3.1, so that nothing queued is lost. `protocol` says what is in use.
* A refused connection (bad credentials, not authorised), an unreachable broker or a failed TLS
  handshake is logged once per distinct reason and kept in `last_error` (None while all is well); paho
  keeps retrying with backoff, so fixing the broker side needs no restart here.
* paho's return codes and ValueErrors become `TransportError`. Exceptions raised by our handlers are
  logged and swallowed: they must never kill paho's network thread.

Imports only paho, the standard library, `protocols` and `edge_agent` (it ships in the `agent` extra).
`edge_agent.paho_spool.SpooledPahoTransport` adds a disk spool for what the agent publishes.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from edge_agent.deferred import defer

defer("urllib.request")  # paho reads proxies with it only where PySocks is installed: ~2.4 MB

import paho.mqtt.client as mqtt  # noqa: E402 - after defer()
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from paho.mqtt.reasoncodes import ReasonCode  # noqa: E402

from edge_agent.broker_url import BrokerAddress, parse_broker_url  # noqa: E402
from edge_agent.transport import ConnectHandler, MessageHandler, SubscribedHandler, TransportError, Will  # noqa: E402
from protocols import topics  # noqa: E402

# BrokerAddress and parse_broker_url live in edge_agent.broker_url; importable from here as before
__all__ = ["BrokerAddress", "MqttProtocol", "PahoTransport", "parse_broker_url"]

log = logging.getLogger(__name__)

MqttProtocol = Literal["3.1.1", "5"]
_PAHO_PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}
_UNSUPPORTED_PROTOCOL_VERSION = 132  # CONNACK reason; paho maps 3.1.1's return code 1 onto it


def _check(rule: Callable[[str], str], value: str) -> None:
    """Apply a topic rule from protocols.topics, turning its TopicError into this port's TransportError."""
    try:
        rule(value)
    except topics.TopicError as exc:
        raise TransportError(str(exc)) from None


def _tls_context(ca_file: str | None, on_handshake_failure: Callable[[BaseException], None]) -> ssl.SSLContext:
    """A verifying client context (system CAs, or ca_file) whose sockets close themselves when the TLS
    handshake fails (paho leaves them open, and on_connect_fail does not say why: on_handshake_failure does)."""

    class HandshakeClosingSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            try:
                super().do_handshake(block)
            except OSError as exc:  # ssl.SSLError is an OSError
                on_handshake_failure(exc)
                self.close()
                raise

    context = ssl.create_default_context(cafile=ca_file)
    context.sslsocket_class = HandshakeClosingSocket
    return context


class PahoTransport:
    """A `Transport` over one paho-mqtt client and its network thread."""

    client_class: type[mqtt.Client] = mqtt.Client  # the cloud's subclass reads in bulk (cloud.mqtt.bulk_client)

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        will: Will | None = None,
        tls_ca: str | None = None,
        protocol: MqttProtocol = "5",
        clean_start: bool = True,
        session_expiry_s: int = 3600,
        max_queued: int = 1000,
        queue_full_wait_s: float = 0.0,
        keepalive_s: int = 30,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.address = parse_broker_url(url)
        if protocol not in _PAHO_PROTOCOLS:
            raise TransportError(f"protocol must be '3.1.1' or '5', got {protocol!r}")
        if not isinstance(client_id, str) or not client_id:
            raise TransportError("client_id must be a non-empty string")
        if tls_ca is not None and not self.address.tls:
            raise TransportError(f"tls_ca given but {url!r} is not an mqtts:// URL")
        self.client_id = client_id
        self.protocol: MqttProtocol = protocol
        self.last_error: str | None = None
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s
        # how long a publish may wait for room when paho's queue is full while online (the broker's acks free it):
        # the cloud sets it, so a deploy to more devices than the queue holds is slowed down, not cut short; a
        # device keeps 0 (its spool takes what does not fit)
        self._queue_full_wait_s = queue_full_wait_s
        self._lock = threading.Lock()
        self._filters: dict[str, int] = {}
        self._link_up = False  # CONNACK accepted; subscriptions may still be in flight
        self._ready = threading.Event()  # link up and subscriptions acknowledged
        self._restore_mid: int | None = None
        self._started = False
        self._handshake_failure: str | None = None
        self._on_message: MessageHandler = lambda _topic, _payload: None
        self._on_connect: ConnectHandler = lambda: None
        self._on_subscribed: SubscribedHandler = lambda _f, _granted: None
        self._subscribing: dict[int, str] = {}  # message id -> the filter a live subscribe() sent

        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": _PAHO_PROTOCOLS[protocol]}
        if protocol == "3.1.1":
            kwargs["clean_session"] = clean_start
        client = self.client_class(CallbackAPIVersion.VERSION2, **kwargs)
        client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)  # type: ignore[arg-type]  # floats work
        client.max_queued_messages_set(max_queued)
        if username is not None:
            client.username_pw_set(username, password)
        if will is not None:
            client.will_set(will.topic, will.payload, will.qos, will.retain)
        if self.address.tls:
            try:
                client.tls_set_context(_tls_context(tls_ca, self._note_handshake_failure))
            except (OSError, ValueError) as exc:
                raise TransportError(f"cannot set up TLS with CA bundle {tls_ca!r}: {exc}") from exc
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_subscribe = self._handle_subscribe
        client.on_message = self._handle_message
        self._client = client

    # -- Transport interface -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        properties = None
        if self.protocol == "5" and not self._clean_start:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self._session_expiry_s
        self._client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=self._keepalive_s,
            clean_start=self._clean_start if self.protocol == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client.loop_start()

    def stop(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._link_up = False
        self._ready.clear()
        self._client.disconnect()  # a clean DISCONNECT: the broker does not publish our will
        self._client.loop_stop()
        # loop_stop() leaves the sockets open until garbage collection (paho issue #627): close them so
        # stop/start cycles leak no descriptors (queued messages live elsewhere and survive)
        reset = getattr(self._client, "_reset_sockets", None)
        if reset is not None:
            reset()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self._send(topic, payload, qos, retain)

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        """Hand a message to paho; returns paho's message id (on_publish names it once the broker has it)."""
        _check(topics.check_topic_name, topic)
        if qos not in (0, 1, 2):
            raise TransportError(f"qos must be 0, 1 or 2, got {qos!r}")
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
            deadline = time.monotonic() + self._queue_full_wait_s
            while (info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE and time.monotonic() < deadline
                   and self._may_wait_for_room()):  # fmt: skip
                time.sleep(0.005)  # paho's network thread removes acknowledged messages meanwhile
                info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except (ValueError, TypeError) as exc:
            raise TransportError(f"cannot publish to {topic!r}: {exc}") from exc
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            if qos == 0:
                log.debug("offline: dropped QoS 0 message to %s", topic)
            return info.mid  # QoS 1/2: paho keeps it and sends it after the next connect
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise TransportError(f"outgoing queue full; message to {topic!r} not queued")
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError(f"cannot publish to {topic!r}: {mqtt.error_string(info.rc)}")
        return info.mid

    def _may_wait_for_room(self) -> bool:
        # never on paho's own thread: the acks that make room are read there
        return (self._queue_full_wait_s > 0 and self.connected
                and threading.current_thread() is not getattr(self._client, "_thread", None))  # fmt: skip

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        _check(topics.check_topic_filter, topic_filter)
        if qos not in (0, 1, 2):
            raise TransportError(f"qos must be 0, 1 or 2, got {qos!r}")
        with self._lock:
            self._filters[topic_filter] = qos
            send_now = self._link_up
        if send_now:
            with self._lock:  # held across the send: the SUBACK (paho's thread) must find the mid
                rc, mid = self._client.subscribe(topic_filter, qos)
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                    self._subscribing[mid] = topic_filter
            if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                raise TransportError(f"cannot subscribe to {topic_filter!r}: {mqtt.error_string(rc)}")

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            known = self._filters.pop(topic_filter, None) is not None
            send_now = self._link_up
        if known and send_now:
            rc, _mid = self._client.unsubscribe(topic_filter)
            if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                raise TransportError(f"cannot unsubscribe from {topic_filter!r}: {mqtt.error_string(rc)}")

    def set_message_handler(self, handler: MessageHandler) -> None:
        self._on_message = handler

    def set_connect_handler(self, handler: ConnectHandler) -> None:
        self._on_connect = handler

    def set_subscribed_handler(self, handler: SubscribedHandler) -> None:
        self._on_subscribed = handler

    # -- paho callbacks (paho's network thread) ------------------------------------------------------

    def _handle_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            if self.protocol == "5" and reason.value == _UNSUPPORTED_PROTOCOL_VERSION:
                self._downgrade_to_311(client)
                return
            self._record_error(f"broker {self.address.host}:{self.address.port} refused the connection: {reason}")
            return
        self.last_error = None
        log.info("connected to %s:%s as %s (MQTT %s)", self.address.host, self.address.port, self.client_id,
                 self.protocol)
        with self._lock:
            self._link_up = True
            filters = list(self._filters.items())
        if not filters:
            self._become_ready()
            return
        rc, mid = client.subscribe(filters)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._restore_mid = mid

    def _handle_subscribe(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reasons: list[ReasonCode], _props: Any
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self._record_error(f"broker refused a subscription (message id {mid}): {', '.join(failed)}")
        if mid == self._restore_mid:
            self._restore_mid = None
            self._become_ready()
        with self._lock:
            topic_filter = self._subscribing.pop(mid, None)
        if topic_filter is not None:
            self._on_subscribed(topic_filter, not failed)

    def _handle_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        detail, self._handshake_failure = self._handshake_failure, None
        where = f"{self.address.host}:{self.address.port}"
        if detail is not None:
            self._record_error(f"TLS handshake with broker {where} failed: {detail}")
        else:
            self._record_error(f"cannot reach broker {where}", level=logging.INFO)

    def _note_handshake_failure(self, exc: BaseException) -> None:
        self._handshake_failure = str(exc)

    def _handle_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        was_ready = self._ready.is_set()
        with self._lock:
            self._link_up = False
        self._ready.clear()
        if was_ready and self._started:
            log.warning("lost connection to %s:%s: %s; reconnecting", self.address.host, self.address.port, reason)

    def _handle_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._on_message(message.topic, bytes(message.payload))
        except Exception:
            log.exception("message handler failed on %s; message dropped", message.topic)

    # -- helpers ---------------------------------------------------------------------------------------

    def _become_ready(self) -> None:
        self._ready.set()
        try:
            self._on_connect()
        except Exception:
            log.exception("connect handler failed")

    def _downgrade_to_311(self, client: mqtt.Client) -> None:
        # paho reads _protocol on every (re)connect; swapping it keeps the client and its queued messages
        log.info("broker %s:%s does not speak MQTT 5; using MQTT 3.1.1", self.address.host, self.address.port)
        self.protocol = "3.1.1"
        client._protocol = mqtt.MQTTv311
        client._clean_session = self._clean_start

    def _record_error(self, message: str, level: int = logging.WARNING) -> None:
        if message != self.last_error:
            log.log(level, "%s (client %s)", message, self.client_id)
        self.last_error = message
