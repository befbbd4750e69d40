"""`LoopTransport`: the agent's `Transport` over gmqtt, an asyncio MQTT client, so that thousands of
simulated devices each keep their own MQTT connection on one shared event loop (paho needs a thread and
a select() per client, and select() fails past file descriptor 1024).

It keeps the promises of `edge_agent.paho_transport.PahoTransport` that the contract test checks
(tests/integration/test_mqtt_transport_contract.py):
* `start()` connects in the background and reconnects with exponential backoff until `stop()`;
  `connected` turns true once the subscriptions are acknowledged, and then the connect handler runs.
* Subscriptions are sent again on every connection (each connection starts a clean session).
* QoS 1 messages published while offline wait in memory (at most `max_queued`) and go out after the next
  connect; QoS 0 ones are dropped. Unlike the device's transport there is no disk spool: a simulated
  device's outbox lives as long as its process.
* A broker that refuses MQTT 5 ("unsupported protocol version") is asked again in 3.1.1.
Every method may be called from any thread; gmqtt itself is only touched on the loop. Each reconnect uses
a fresh gmqtt client: the reconnection logic is ours, gmqtt's own is switched off. A handshake that fails
(refused, timed out, cut by `drop()`) is one more in `failed_handshakes` and a retry after the backoff.

`drop(offline_s)` cuts the link as a network failure would (no DISCONNECT: the broker publishes the will)
and keeps it down for `offline_s`: the simulator's network faults.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import threading
from collections.abc import Awaitable
from typing import Any, Literal, TypeVar

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from edge_agent.broker_url import parse_broker_url
from edge_agent.transport import ConnectHandler, MessageHandler, SubscribedHandler, TransportError, Will
from protocols import topics
from simulator import direct_read

__all__ = ["LoopTransport"]

log = logging.getLogger(__name__)
# gmqtt logs each refused or lost connection itself (at ERROR when its own reconnects, which we switch
# off, give up); this module reports those in its own words, once per distinct reason
_gmqtt_log = log.getChild("gmqtt")
_gmqtt_log.setLevel(logging.CRITICAL)
T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
SUBACK_TIMEOUT_S = 10.0
_UNSUPPORTED_PROTOCOL_VERSION = 1  # CONNACK return code in 3.1.1 (gmqtt reports the 3.1.1 code)
_NO_RECONNECTS = -2  # gmqtt reconnects while failures <= this; its "unlimited" is -1


class LoopTransport:
    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        loop: asyncio.AbstractEventLoop,
        username: str | None = None,
        password: str | None = None,
        will: Will | None = None,
        tls_ca: str | None = None,
        protocol: Literal["3.1.1", "5"] = "5",
        keepalive_s: int = 60,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        max_queued: int = 1000,
        connect_gate: asyncio.Semaphore | None = None,
    ) -> None:
        """connect_gate: shared by many transports, bounds how many handshakes run at once (a thousand
        devices starting together would otherwise overflow the broker's listen backlog)."""
        self.address = parse_broker_url(url)
        if protocol not in ("3.1.1", "5"):
            raise TransportError(f"protocol must be '3.1.1' or '5', got {protocol!r}")
        if not client_id:
            raise TransportError("client_id must be a non-empty string")
        if tls_ca is not None and not self.address.tls:
            raise TransportError(f"tls_ca given but {url!r} is not an mqtts:// URL")
        self.client_id = client_id
        self.protocol = protocol
        self.last_error: str | None = None
        self.failed_handshakes = 0  # connection attempts that did not end connected (each one is retried)
        self._loop = loop
        self._credentials = (username, password)
        self._will = will
        self._ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=tls_ca) if self.address.tls else False
        self._keepalive_s = keepalive_s
        self._backoff = (reconnect_min_s, reconnect_max_s)
        self._max_queued = max_queued
        self._gate = connect_gate
        self._lock = threading.Lock()
        self._filters: dict[str, int] = {}
        self._restored: set[str] = set()  # the filters the last connect subscribed to
        self._queued: collections.deque[tuple[str, bytes, int, bool]] = collections.deque()
        self._ready = threading.Event()
        self._running = False
        self._task: asyncio.Task[None] | None = None
        self.closing: asyncio.Task[None] | None = None  # stop() on the loop: await this to know the link is closed
        self._client: gmqtt.Client | None = None
        self._lost: asyncio.Event | None = None
        self._suback: dict[int, asyncio.Future[list[int]]] = {}
        self._offline_until = 0.0  # loop time before which drop() keeps the link down
        self._on_message: MessageHandler = lambda _t, _p: None
        self._on_connect: ConnectHandler = lambda: None
        self._corked: list[bytes] | None = None  # packets held back by cork(), in order
        self._corked_protocol: Any = None
        self._on_subscribed: SubscribedHandler = lambda _f, _granted: None
        self._subscribing: dict[int, str] = {}  # message id -> the filter a live subscribe() sent (loop only)

    # -- Transport interface ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def start(self) -> None:
        with self._lock:
            if self._running:
                return
            self._running = True
        self._call(self._begin)

    def stop(self) -> None:
        with self._lock:
            if not self._running:
                return
            self._running = False
        self._ready.clear()
        if self._on_loop():
            self.closing = self._loop.create_task(self._end())
        elif not self._loop.is_closed():
            with contextlib.suppress(Exception):  # the loop may stop meanwhile: then nothing is left to close
                asyncio.run_coroutine_threadsafe(self._end(), self._loop).result(CONNECT_TIMEOUT_S)

    def wait_connected(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        _check(topics.check_topic_name, topic)
        if qos not in (0, 1, 2):
            raise TransportError(f"qos must be 0, 1 or 2, got {qos!r}")
        if not self.connected and qos > 0 and len(self._queued) >= self._max_queued:
            raise TransportError(f"outgoing queue full; message to {topic!r} not queued")
        self._call(self._publish_now, topic, bytes(payload), qos, retain)

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        _check(topics.check_topic_filter, topic_filter)
        if qos not in (0, 1, 2):
            raise TransportError(f"qos must be 0, 1 or 2, got {qos!r}")
        with self._lock:
            self._filters[topic_filter] = qos
        if self.connected:
            self._call(self._subscribe_now, topic_filter, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            known = self._filters.pop(topic_filter, None) is not None
        if known and self.connected:
            self._call(self._unsubscribe_now, topic_filter)

    def set_message_handler(self, handler: MessageHandler) -> None:
        self._on_message = handler

    def set_connect_handler(self, handler: ConnectHandler) -> None:
        self._on_connect = handler

    def set_subscribed_handler(self, handler: SubscribedHandler) -> None:
        self._on_subscribed = handler

    # -- faults ----------------------------------------------------------------------------------------

    def drop(self, offline_s: float = 0.0) -> None:
        """Cut the connection without a DISCONNECT (the will fires) and stay offline for offline_s."""
        self._call(self._drop_now, offline_s)

    # -- corking (edge_agent.runner.LoopRunner: around each of the agent's steps) ----------------------

    def cork(self) -> None:
        """On the loop: hold back the packets written from now on until `uncork()`, which sends them in one
        socket write. A step that publishes an event, a report and a subscription costs one send, not three
        (each send on loopback also runs the broker's side of TCP); nothing waits for a later loop turn."""
        self._hold()

    def _hold(self) -> bool:
        """cork(); False when nothing was corked (no connection, or already corked: that cork's uncork sends)."""
        connection = getattr(self._client, "_connection", None)
        protocol = getattr(connection, "_protocol", None)
        if protocol is None or self._corked is not None:
            return False
        self._corked, self._corked_protocol = [], protocol
        protocol.write_data = self._corked.append  # shadows the protocol's method until uncork()
        return True

    def uncork(self) -> None:
        protocol, held = self._corked_protocol, self._corked
        if protocol is None or held is None:
            return
        self._corked = self._corked_protocol = None
        del protocol.write_data
        if held:
            protocol.write_data(b"".join(held))  # dropped there if the link closed meanwhile, as each would be

    # -- on the loop -----------------------------------------------------------------------------------

    def _ack_per_read(self, client: gmqtt.Client) -> None:
        """Acknowledge the QoS 1 messages of one socket read in one write: gmqtt sends each PUBACK on its own
        as it parses the read, and an update's ten retained chunks mostly come in one or two reads (a
        simulated fleet's loop spent a tenth of its time in those sends). Same PUBACKs, same order.

        The write waits for the steps the read queued (the agent's, `LoopRunner`: each corked, so the first
        one's uncork takes the PUBACKs along): a desired state's PUBACK and the SUBSCRIBE its step sends go
        in one write, not two (7 writes per device and update -> 4; a worker's sends were 15 % of its time).
        A read that queued no step is uncorked on the next loop turn all the same."""
        protocol = getattr(getattr(client, "_connection", None), "_protocol", None)
        if protocol is None:
            return
        parse = protocol._read_packet

        def parse_corked(data: bytes) -> int:
            corked = self._hold() if self._client is client else False
            try:
                return int(parse(data))
            finally:
                if corked:  # call_soon: after the steps this read queued (a FIFO), which send it all first
                    self._loop.call_soon(self.uncork)

        protocol._read_packet = parse_corked

    def _begin(self) -> None:
        if self._running and self._task is None:
            self._task = self._loop.create_task(self._maintain(), name=f"mqtt-{self.client_id}")

    async def _maintain(self) -> None:
        delay = self._backoff[0]
        while self._running:
            wait = self._offline_until - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if await self._connect_once():
                delay = self._backoff[0]
                assert self._lost is not None
                await self._lost.wait()
                self._ready.clear()
                await self._close_client(clean=False)
                if self._running:
                    log.info("lost connection to %s:%s (client %s); reconnecting", self.address.host,
                             self.address.port, self.client_id)  # fmt: skip
                continue
            await self._close_client(clean=False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])

    async def _connect_once(self) -> bool:
        client = self._new_client()
        self._client, self._lost = client, asyncio.Event()
        self._subscribing.clear()  # the last connection's message ids
        version = MQTTv50 if self.protocol == "5" else MQTTv311
        where = f"{self.address.host}:{self.address.port}"
        try:
            async with self._gate if self._gate is not None else contextlib.nullcontext():
                await self._handshake(client, version)
                self._ack_per_read(client)
                if self._filters:
                    await self._restore_subscriptions(client)
        except gmqtt.MQTTConnectError as exc:
            self.failed_handshakes += 1
            if self.protocol == "5" and getattr(exc, "_code", None) == _UNSUPPORTED_PROTOCOL_VERSION:
                self._step_down(where)
            else:
                self._record_error(f"broker {where} refused the connection: {exc}")
            return False
        except _Refused:
            self.failed_handshakes += 1
            if self.protocol == "5" and client._connection_state.protocol_version == MQTTv311:
                self._step_down(where)  # gmqtt saw "unsupported protocol version" and wanted to retry in 3.1.1
            elif self._offline_until > self._loop.time():
                self._record_error(f"link to {where} cut during the handshake (drop)", logging.INFO)
            else:
                self._record_error(f"broker {where} closed the connection during the handshake")
            return False
        except (OSError, TimeoutError) as exc:
            self.failed_handshakes += 1
            self._record_error(f"cannot reach broker {where}: {exc or type(exc).__name__}", logging.INFO)
            return False
        if self._lost.is_set() or not self._running:
            self.failed_handshakes += self._running  # cut while subscribing: retried like any failed handshake
            return False
        self.last_error = None
        while self._queued:  # what was published while offline, in order
            topic, payload, qos, retain = self._queued.popleft()
            client.publish(topic, payload, qos=qos, retain=retain)
        self._ready.set()
        self._catch_up_subscriptions(client)
        try:
            self._on_connect()
        except Exception:
            log.exception("connect handler failed")
        return True

    async def _handshake(self, client: gmqtt.Client, version: int) -> None:
        """client.connect(), unless the broker closes the link first (gmqtt would wait for a CONNACK)."""
        connecting = client.connect(self.address.host, self.address.port, ssl=self._ssl,
                                    keepalive=self._keepalive_s, version=version)  # fmt: skip
        await self._unless_lost(connecting, CONNECT_TIMEOUT_S, "CONNACK")

    async def _unless_lost(self, step: Awaitable[T], timeout_s: float, awaited: str) -> T:
        """What step returns, unless the link is lost first (_Refused) or timeout_s passes (TimeoutError);
        either way step is cancelled."""
        assert self._lost is not None
        stepping = asyncio.ensure_future(step)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait({stepping, lost}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not stepping.done():
                stepping.cancel()
        if stepping in done:
            return stepping.result()  # raises what the step raised
        if lost in done:
            raise _Refused
        raise TimeoutError(f"no {awaited} within {timeout_s:g} s")

    def _step_down(self, where: str) -> None:
        log.info("broker %s does not speak MQTT 5; using MQTT 3.1.1", where)
        self.protocol = "3.1.1"

    async def _restore_subscriptions(self, client: gmqtt.Client) -> None:
        with self._lock:
            filters = list(self._filters.items())
        self._restored = {f for f, _q in filters}
        mid = client.subscribe([gmqtt.Subscription(f, qos=q) for f, q in filters])
        acked = self._suback[mid] = self._loop.create_future()
        try:
            codes = await self._unless_lost(acked, SUBACK_TIMEOUT_S, "SUBACK")
        finally:
            # gone with this attempt: every client numbers its packets from 1, so a future left here (a
            # cancelled one, after a timeout) was awaited by the next connection's restore, whose
            # CancelledError ended the reconnect task; the device stayed offline for good
            self._suback.pop(mid, None)
        refused = [f for (f, _q), code in zip(filters, codes, strict=False) if code >= 0x80]
        if refused:
            self._record_error(f"broker refused subscriptions: {', '.join(refused)}")

    def _catch_up_subscriptions(self, client: gmqtt.Client) -> None:
        """Filters added or removed while the handshake ran (a retained message delivered on subscribing can
        make the agent subscribe at once): subscribe() and unsubscribe() only reach the broker once ready."""
        with self._lock:
            current = dict(self._filters)
        restored, self._restored = self._restored, set()
        for topic_filter, qos in current.items():
            if topic_filter not in restored:  # its SUBACK reaches the subscribed handler, as a live subscribe()'s
                self._subscribing[client.subscribe(gmqtt.Subscription(topic_filter, qos=qos))] = topic_filter
        for topic_filter in restored - current.keys():
            client.unsubscribe(topic_filter)

    def _new_client(self) -> gmqtt.Client:
        will = None
        if self._will is not None:
            will = gmqtt.Message(self._will.topic, self._will.payload, qos=self._will.qos, retain=self._will.retain)
        client = _Client(self.client_id, clean_session=True, will_message=will, logger=_gmqtt_log)
        client.set_config({"reconnect_retries": _NO_RECONNECTS})
        username, password = self._credentials
        if username is not None:
            client.set_auth_credentials(username, password)
        client.on_message = self._handle_message
        client.on_disconnect = self._handle_disconnect
        client.on_subscribe = self._handle_subscribe
        return client

    def _handle_message(self, _client: gmqtt.Client, topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        try:
            self._on_message(topic, bytes(payload))
        except Exception:
            log.exception("message handler failed on %s; message dropped", topic)
        return 0  # PUBACK: success

    def _handle_disconnect(self, client: gmqtt.Client, *_args: Any) -> None:
        if client is self._client and self._lost is not None:
            self._lost.set()

    def _handle_subscribe(self, client: gmqtt.Client, mid: int, codes: Any, _props: Any) -> None:
        if client is not self._client:
            return  # a SUBACK to an earlier connection: its message ids are not this one's
        future = self._suback.pop(mid, None)
        codes = [int(c) for c in (codes if isinstance(codes, list | tuple) else [codes])]
        if future is not None and not future.done():
            future.set_result(codes)
        topic_filter = self._subscribing.pop(mid, None)
        if topic_filter is not None:
            try:
                self._on_subscribed(topic_filter, all(c < 0x80 for c in codes))
            except Exception:
                log.exception("subscribed handler failed on %s", topic_filter)

    def _publish_now(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        client = self._client
        if self._ready.is_set() and client is not None:
            try:
                client.publish(topic, payload, qos=qos, retain=retain)
                return
            except Exception as exc:  # noqa: BLE001 - a closing link: keep QoS 1 for the next connection
                log.debug("publish to %s failed (%s); queued", topic, exc)
        if qos > 0:
            if len(self._queued) >= self._max_queued:
                log.warning("client %s: outgoing queue full; dropped message to %s", self.client_id, topic)
                return
            self._queued.append((topic, payload, qos, retain))

    def _subscribe_now(self, topic_filter: str, qos: int) -> None:
        if self._client is not None and self._ready.is_set():
            mid = self._client.subscribe(gmqtt.Subscription(topic_filter, qos=qos))
            self._subscribing[mid] = topic_filter

    def _unsubscribe_now(self, topic_filter: str) -> None:
        if self._client is not None and self._ready.is_set():
            self._client.unsubscribe(topic_filter)

    def _drop_now(self, offline_s: float) -> None:
        self._offline_until = self._loop.time() + offline_s
        connection = getattr(self._client, "_connection", None)
        transport = getattr(connection, "_transport", None)
        if transport is not None:
            transport.abort()  # no DISCONNECT packet: to the broker this is a lost link
        if self._lost is not None:
            self._lost.set()

    async def _end(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_client(clean=True)

    async def _close_client(self, *, clean: bool) -> None:
        self.uncork()  # what a read or a step held goes ahead of the DISCONNECT (or is dropped with the link)
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):  # whatever state the link is in, it ends here
            if clean and client.is_connected:
                await asyncio.wait_for(client.disconnect(), CONNECT_TIMEOUT_S)  # a clean DISCONNECT: no will
            else:
                client._is_active = False  # gmqtt must not reconnect this client on its own
                connection = client._connection
                if connection is not None:
                    await connection.close()

    # -- helpers ---------------------------------------------------------------------------------------

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _call(self, fn: Any, *args: Any) -> None:
        if self._on_loop():
            fn(*args)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _record_error(self, message: str, level: int = logging.WARNING) -> None:
        if message != self.last_error:
            log.log(level, "%s (client %s)", message, self.client_id)
        self.last_error = message


class _Client(gmqtt.Client):
    """gmqtt's client, safe to cancel while it opens the TCP connection. Cancelled there (a handshake timed
    out or cut by drop() under load), asyncio closes the half-made transport at once, and gmqtt's protocol,
    not yet tied to a connection, failed in connection_lost with "'NoneType' object has no attribute
    'put_package'" on the event loop. Here the opening finishes in the background and the connection it
    makes is closed: the attempt just fails, and the transport retries. Its protocol parses each socket read
    as it arrives (simulator.direct_read), not through gmqtt's stream reader and read task, and takes a
    PUBLISH apart with one copy of its payload."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        direct_read.lean_publish(self._package_handler)

    async def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
        opening = asyncio.ensure_future(self._open(*args, **kwargs))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_unused)
            raise

    async def _open(self, host: str, port: int, ssl: Any, clean_session: bool, keepalive: int) -> Any:
        """gmqtt.Client._create_connection, with a protocol that parses each read at once (simulator.direct_read)."""
        self._exit_reconnecting_state()
        self._package_handler.clear_topics_aliases()
        self._connack_received.clear()  # a refused attempt's CONNACK must not answer this one
        self._connection_lost.clear()
        return await direct_read.open_connection(
            host, port, ssl, clean_session, keepalive, connection_state=self._connection_state,
            package_handler=self._package_handler, logger=self._logger,
        )  # fmt: skip


def _close_unused(opening: asyncio.Future[Any]) -> None:
    """The connection an abandoned opening made, closed without a word to the broker (or its error read)."""
    if opening.cancelled() or opening.exception() is not None:
        return
    transport = getattr(opening.result(), "_transport", None)
    if transport is not None:
        transport.abort()


class _Refused(Exception):
    """The broker closed the link before it acknowledged the connection."""


def _check(rule: Any, value: str) -> None:
    try:
        rule(value)
    except topics.TopicError as exc:
        raise TransportError(str(exc)) from None
