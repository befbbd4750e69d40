"""The embedded MQTT broker: amqtt on its own event loop in a background thread.

It is the default broker for `edgefleet up` and `edgefleet demo` (one machine, nothing to install).
Production uses Mosquitto or a broker cluster; the tests run the same MQTT checks against both.

amqtt 0.12.1 speaks MQTT 3.1.1 only: MQTT 5 clients are refused with "unsupported protocol version"
(`PahoTransport` falls back to 3.1.1 on its own; `EmbeddedBroker.mqtt_protocol` says so up front).
amqtt defects patched in `EdgeFleetAmqttBroker`:

* Retained-message leak: on every connect amqtt sends the new client the retained messages matching
  *any* filter that *any* client ever subscribed to (`_handle_client_session` loops over the broker-wide
  `_subscriptions`). With per-device retained desired state that would hand one device's state to another.
  We send retained messages only for filters the session really holds, at the QoS it holds them with.
* No shared subscriptions: amqtt treats `$share/{group}/{filter}` as a literal filter that never matches,
  so a cloud worker on a shared subscription would silently receive nothing. We implement them: each
  message goes to one connected member of each matching group, round robin, and (as MQTT 5 says) shared
  subscriptions get no retained messages.
* Stuck client clean-up on Python 3.11 (see `_stop_handler`), which made shutdown hang at random, and
  sockets left open (by clients that leave before CONNECT, by ended sessions, and by clients that
  reconnect while the broker shuts down; see `stream_connected` and `shutdown`).

Known limits kept as they are: amqtt fans messages out asynchronously, so a message published just before
a client subscribes may reach it twice (live and retained; QoS 1 consumers are idempotent anyway). It does
not queue QoS 1 messages for offline sessions of anonymous clients, so the cloud-to-device direction
relies on retained state rather than on queued messages. It sets no message size limit below MQTT's
256 MiB (tested with 1 MiB). It has no authentication here: anonymous clients on the loopback address.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from amqtt.broker import Broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from protocols.topics import TopicError, split_shared_filter

log = logging.getLogger(__name__)

_STOP_HANDLER_RETRY_S = 0.25
_STOP_HANDLER_ATTEMPTS = 40


class BrokerStartError(RuntimeError):
    """The embedded broker could not start (port taken, bad address)."""


class EdgeFleetAmqttBroker(Broker):
    """amqtt's Broker with the retained-message leak fixed and MQTT shared subscriptions added."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # full shared filter -> [(session, qos)], and a round-robin counter per shared filter
        self._shared: dict[str, list[tuple[Session, int]]] = {}
        self._shared_turn: dict[str, Iterator[int]] = {}
        self._connections: set[asyncio.StreamWriter] = set()

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        # amqtt does not close every connection it is done with (nor those still open at shutdown), which
        # leaves sockets to the garbage collector; track them and close each one when its session ends
        self._connections.add(writer)
        try:
            await super().stream_connected(reader, writer, listener_name)
        finally:
            self._connections.discard(writer)
            writer.close()

    async def shutdown(self) -> None:
        # amqtt closes its listeners only after cleaning up sessions, so a client reconnecting meanwhile gets a
        # fresh session nobody cleans up. Stop accepting first, and close whatever is still open at the end.
        # (Not Server.close(): on Python 3.11 an accept already under way then fails and leaks its socket.)
        loop = asyncio.get_running_loop()
        for server in self._servers.values():
            if isinstance(server.instance, asyncio.Server):
                for sock in server.instance.sockets:
                    loop.remove_reader(sock.fileno())
        await super().shutdown()
        for writer in list(self._connections):
            writer.close()
        await asyncio.sleep(0)  # let the transports finish closing

    async def _stop_handler(self, handler: BrokerProtocolHandler) -> None:
        # ProtocolHandler.stop() cancels the reader task and waits for it to end. On Python 3.11,
        # asyncio.wait_for can swallow that cancellation when the read it wraps completes at the same moment
        # (cpython gh-86296); the reader then waits for the next packet, up to the keep-alive, and so do
        # broker shutdown and the session's clean-up. Cancelling again until it ends closes the race.
        stopping = asyncio.ensure_future(super()._stop_handler(handler))
        try:
            for _attempt in range(_STOP_HANDLER_ATTEMPTS):
                done, _ = await asyncio.wait({stopping}, timeout=_STOP_HANDLER_RETRY_S)
                if done:
                    return stopping.result()
                reader = getattr(handler, "_reader_task", None)
                if reader is not None and not reader.done():
                    reader.cancel()
        except asyncio.CancelledError:
            stopping.cancel()
            raise
        log.warning("a client handler did not stop; abandoning it")
        stopping.cancel()

    def _held_qos(self, topic_filter: str, session: Session) -> int | None:
        for held_session, qos in self._subscriptions.get(topic_filter, []):
            if held_session.client_id == session.client_id:
                return qos
        return None

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        # amqtt calls this on connect for every filter of every client; only the session's own filters count
        qos = self._held_qos(subscription[0], session)
        if qos is None:
            return
        await super()._publish_retained_messages_for_subscription((subscription[0], qos), session)

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        topic_filter, qos = subscription
        try:
            group, _inner = split_shared_filter(topic_filter)
        except TopicError:
            return 0x80
        if group is None:
            return await super().add_subscription(subscription, session)
        members = self._shared.setdefault(topic_filter, [])
        members[:] = [(s, q) for s, q in members if s.client_id != session.client_id]
        members.append((session, qos))
        self._shared_turn.setdefault(topic_filter, itertools.count())
        return qos

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        if a_filter in self._shared:
            members = self._shared[a_filter]
            before = len(members)
            members[:] = [(s, q) for s, q in members if s.client_id != session.client_id]
            return before - len(members)
        return super()._del_subscription(a_filter, session)

    async def _del_all_subscriptions(self, session: Session) -> None:
        for shared_filter in list(self._shared):
            self._del_subscription(shared_filter, session)
            if not self._shared[shared_filter]:
                del self._shared[shared_filter]
                self._shared_turn.pop(shared_filter, None)
        await super()._del_all_subscriptions(session)

    async def _broadcast_message(
        self,
        session: Session | None,
        topic: str | None,
        data: bytes | bytearray | None,
        force_qos: int | None = None,
    ) -> None:
        await super()._broadcast_message(session, topic, data, force_qos)
        if topic is None or data is None:
            return
        for shared_filter, members in self._shared.items():
            _group, inner = split_shared_filter(shared_filter)
            if not self._matches(topic, inner):
                continue
            online = [(s, q) for s, q in members if s.transitions.state == "connected"]
            if not online:
                continue
            target, sub_qos = online[next(self._shared_turn[shared_filter]) % len(online)]
            handler = self._get_handler(target)
            if handler is not None:
                qos = sub_qos if force_qos is None else force_qos
                self._tasks_queue.append(asyncio.ensure_future(handler.mqtt_publish(topic, data, qos, retain=False)))


def broker_config(host: str, port: int) -> dict[str, Any]:
    """amqtt config: one TCP listener, anonymous access, no packet/event logging and no $SYS chatter."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


class EmbeddedBroker:
    """An MQTT 3.1.1 broker in this process. `start()` returns once it accepts connections."""

    kind = "embedded"
    mqtt_protocol = "3.1.1"
    broker_class: type[Broker] = EdgeFleetAmqttBroker  # tests swap in amqtt's own Broker to watch its bugs

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, start_timeout_s: float = 10.0) -> None:
        self.host = host
        self.port = port
        self._start_timeout_s = start_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> EmbeddedBroker:
        if self.running:
            return self
        _quiet_chatty_loggers()
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_on_loop())
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                failure.append(exc)
                ready.set()
                _close_loop(loop)
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                _close_loop(loop)

        self._thread = threading.Thread(target=run, name=f"edgefleet-broker-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(self._start_timeout_s):
            raise BrokerStartError(f"embedded broker did not start within {self._start_timeout_s} s")
        if failure:
            self._thread.join()
            self._thread = None
            raise BrokerStartError(f"embedded broker could not listen on {self.host}:{self.port}: {failure[0]}")
        log.info("embedded MQTT broker listening on %s", self.url)
        return self

    async def _start_on_loop(self) -> None:
        self._broker = self.broker_class(broker_config(self.host, self.port))
        # amqtt logs a failed start (say, a port in use) with a full traceback; start() reports it in one line
        broker_log = logging.getLogger("amqtt.broker")
        level = broker_log.level
        broker_log.setLevel(logging.CRITICAL)
        try:
            await self._broker.start()
        finally:
            broker_log.setLevel(level)
        if self.port == 0:
            server = self._broker._servers["default"].instance
            self.port = server.sockets[0].getsockname()[1]

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, thread, broker = self._loop, self._thread, self._broker
        if loop is None or thread is None or broker is None or not thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
        try:
            future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            log.warning("embedded broker did not shut down within %s s; closing its connections", timeout_s)
        except Exception:  # a failed shutdown must still stop the loop and free the port
            log.exception("embedded broker shutdown failed")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        self._thread = None
        self._broker = None

    def restart(self) -> EmbeddedBroker:
        """Stop and start again on the same port; sessions and retained messages are lost, as amqtt keeps
        them in memory."""
        self.stop()
        return self.start()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _quiet_chatty_loggers() -> None:
    """amqtt and its state machine library log every connection at INFO; keep them at WARNING unless the
    user has set their levels explicitly."""
    for name in ("amqtt", "transitions"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left (client handlers, timers) and close the loop without 'pending task' noise."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(asyncio.sleep(0))  # transports closed by the cancelled tasks finish closing
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
