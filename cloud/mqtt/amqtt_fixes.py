"""amqtt 0.12.1 with its defects patched: `EdgeFleetAmqttBroker`, the broker class `EmbeddedBroker` runs.

amqtt defects patched in `EdgeFleetAmqttBroker`:

* Retained-message leak: on every connect amqtt sends the new client the retained messages matching
  *any* filter that *any* client ever subscribed to (`_handle_client_session` loops over the broker-wide
  `_subscriptions`). With per-device retained desired state that would hand one device's state to another.
  We send retained messages only for filters the session really holds, at the QoS it holds them with.
* No shared subscriptions: amqtt treats `$share/{group}/{filter}` as a literal filter that never matches,
  so a cloud worker on a shared subscription would silently receive nothing. We implement them: each
  message goes to one connected member of each matching group, round robin, and (as MQTT 5 says) shared
  subscriptions get no retained messages.
* CONNECT acted on before authentication: amqtt deletes the existing session of a clean-session CONNECT's
  client id, copies a persistent CONNECT's will and credentials onto the existing session, and takes over
  (disconnects) a connected client with that id, all before it asks the auth plugins, so anyone naming
  a device's client id could wipe its subscriptions or knock it off. We authenticate right after reading
  the CONNECT and refuse (CONNACK 5) before touching any session (`_initialize_client_session`).
* Shared subscriptions bypassed the topic check (our own `add_subscription` branch): the inner filter
  is checked like any SUBSCRIBE.
* Broadcast lost to a concurrent SUBSCRIBE: `_run_broadcast` iterates the live subscription dict and
  lists while it awaits the topic check (which, with our auth plugins, really yields), so a client
  subscribing meanwhile raised "dictionary changed size during iteration" and the message reached none of
  the remaining subscribers. We iterate snapshots (`_run_broadcast`, amqtt's body otherwise unchanged).
* Work that grows with the fleet squared: amqtt matched every published message against every filter
  of every client, and every SUBSCRIBE against every retained message (one of each per device: desired
  state, presence), in Python on the cloud's interpreter. A message now goes straight to the clients of
  the filter equal to its topic, and only wildcard filters are matched; a filter without wildcards looks
  up its one retained message (`_run_broadcast`, `_publish_retained_messages_for_subscription`).
* Stuck client clean-up on Python 3.11 (see `_stop_handler`), which made shutdown hang at random, and
  sockets left open (by clients that leave before CONNECT, by ended sessions, and by clients that
  reconnect while the broker shuts down; see `stream_connected` and `shutdown`).

Known limits kept as they are: amqtt fans messages out asynchronously, so a message published just before
a client subscribes may reach it twice (live and retained; QoS 1 consumers are idempotent anyway). It does
not queue QoS 1 messages for offline sessions of anonymous clients, so the cloud-to-device direction
relies on retained state rather than on queued messages. It sets no message size limit below MQTT's
256 MiB (tested with 1 MiB). Authentication and topic checks are plugins (`cloud.mqtt.auth_plugins`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Iterator
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, ListenerConfig
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id

from protocols.topics import TopicError, split_shared_filter

log = logging.getLogger(__name__)

_STOP_HANDLER_RETRY_S = 0.25
_STOP_HANDLER_ATTEMPTS = 40
_AUTHENTICATED = "edgefleet_authenticated"  # set on a Session (amqtt's Session is unhashable: no set of them)


class EdgeFleetAmqttBroker(Broker):
    """amqtt's Broker with the retained-message leak fixed and MQTT shared subscriptions added."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # full shared filter -> [(session, qos)], and a round-robin counter per shared filter
        self._shared: dict[str, list[tuple[Session, int]]] = {}
        self._shared_turn: dict[str, Iterator[int]] = {}
        self._connections: set[asyncio.StreamWriter] = set()
        self._wildcards: list[str] | None = None  # the wildcard filters among _subscriptions' keys (None: stale)

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

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        # amqtt's version with the authentication moved up: nothing below runs for a refused CONNECT
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except MQTTError:
            await writer.close()
            raise
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc
        if not await super()._authenticate(session, None):  # type: ignore[arg-type]  # the listener is unused
            log.info("refused CONNECT from %s:%s (user %r)", remote_address, remote_port, session.username)
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError("not authorized")
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive",
                         "username", "password"):  # fmt: skip
                setattr(existing, name, getattr(session, name))
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        setattr(session, _AUTHENTICATED, True)
        return handler, session

    async def _authenticate(self, session: Session, _: ListenerConfig) -> bool:
        # decided in _initialize_client_session, before amqtt touched any session
        return bool(getattr(session, _AUTHENTICATED, False))

    async def disconnect_clients(self, client_ids: set[str]) -> list[str]:
        """Drop the connected clients with these ids, without their wills (a revoked device's last word
        is not published); returns those that were connected."""
        dropped = []
        for client_id in client_ids:
            session, handler = self._sessions.get(client_id, (None, None))
            if session is None or handler is None or session.transitions.state != "connected":
                continue
            session.will_flag = False
            setattr(session, _AUTHENTICATED, False)
            await handler.handle_connection_closed()
            dropped.append(client_id)
        return dropped

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
        topic_filter = subscription[0]
        qos = self._held_qos(topic_filter, session)
        if qos is None:
            return
        if _has_wildcard(topic_filter):
            await super()._publish_retained_messages_for_subscription((topic_filter, qos), session)
            return
        retained, handler = self._retained_messages.get(topic_filter), self._get_handler(session)
        if retained is not None and handler is not None:  # as amqtt sends it, in a task of its own
            publish = handler.mqtt_publish(retained.topic, retained.data, min(qos, retained.qos or qos), retain=True)
            await asyncio.wait([asyncio.ensure_future(publish)])

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        topic_filter, qos = subscription
        try:
            group, _inner = split_shared_filter(topic_filter)
        except TopicError:
            return 0x80
        if group is None:
            try:
                return await super().add_subscription(subscription, session)
            finally:  # after amqtt's await: a broadcast meanwhile may have listed the filters without this one
                self._wildcards = None
        if not await self._topic_filtering(session, _inner, Action.SUBSCRIBE):
            return 0x80
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
        self._wildcards = None
        await super()._del_all_subscriptions(session)

    async def _run_broadcast(self, running_tasks: deque[asyncio.Task[Any]]) -> None:
        """amqtt 0.12.1's `_run_broadcast`, iterating snapshots of the subscriptions (see the module doc)."""
        broadcast = await self._broadcast_queue.get()
        for subscriptions in self._subscribers_of(broadcast["topic"]):
            for target_session, sub_qos in list(subscriptions):
                qos = broadcast.get("qos", sub_qos)
                if not await self._topic_filtering(target_session, topic=broadcast["topic"], action=Action.RECEIVE):
                    continue
                # a persistent, authenticated session that is away keeps QoS 1/2 messages [MQTT 3.1.2.4]
                if (target_session.transitions.state != "connected" and not target_session.clean_session
                        and qos in (QOS_1, QOS_2) and not target_session.is_anonymous):  # fmt: skip
                    await self._retain_broadcast_message(broadcast, qos, target_session)
                    continue
                if target_session.transitions.state != "connected":
                    continue
                handler = self._get_handler(target_session)
                if handler:
                    publish = handler.mqtt_publish(broadcast["topic"], broadcast["data"], qos, retain=False)
                    running_tasks.append(asyncio.ensure_future(publish))

    def _subscribers_of(self, topic: str) -> list[list[tuple[Session, int]]]:
        """The subscription lists of the filters topic matches: the one equal to it, and wildcard ones."""
        if self._wildcards is None:
            self._wildcards = [f for f in self._subscriptions if _has_wildcard(f)]
        matched = [self._subscriptions.get(topic, [])]
        matched += [self._subscriptions.get(f, []) for f in self._wildcards if self._matches(topic, f)]
        return [list(subscriptions) for subscriptions in matched]  # snapshots (see the module doc)

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


def _has_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter
