"""gmqtt's client reading its socket without a stream: packets parsed in `data_received`, as the bytes come.

gmqtt's protocol feeds every read to an asyncio StreamReader, and a task of its own per connection wakes to
read it back (a copy into the reader's buffer, a copy out of it, one more loop turn per read) before it parses
the packets. A simulated fleet's loop holds thousands of connections and an update brings each ~100 KB of
chunks: here the packets of a read are parsed at once from the bytes asyncio hands over, and only a packet cut
at the read's end is kept (in a bytearray) for the next. The packets, their order and their handling are
gmqtt's: `MQTTProtocol._read_packet` parses them and the client's handler acts on them.

`lean_publish` has a client's handler take an MQTT 3.1.1 PUBLISH of QoS 0 or 1 apart with one copy of its
payload (gmqtt's struct.unpack copied the rest of the packet three times, each with a format string of its
own); anything else goes to gmqtt's own parser.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from gmqtt.mqtt.connection import MQTTConnection
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.mqtt.protocol import BaseMQTTProtocol, MQTTProtocol
from gmqtt.mqtt.utils import run_coroutine_or_function

__all__ = ["DirectReadProtocol", "lean_publish", "open_connection"]


class DirectReadProtocol(MQTTProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rest = bytearray()  # a packet the last read cut short

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        BaseMQTTProtocol.connection_made(self, transport)  # type: ignore[arg-type]  # no read task

    def data_received(self, data: bytes) -> None:
        if self._rest:
            self._rest += data
            data, self._rest = bytes(self._rest), bytearray()
        # an attribute lookup on each read: the transport may wrap the parser (LoopTransport._ack_per_read)
        parsed = self._read_packet(data)
        if parsed < 0:  # a length no MQTT packet has: the stream is lost, as gmqtt's read loop decides
            if self._transport is not None:
                self._transport.close()
            return
        if parsed < len(data):
            self._rest += memoryview(data)[parsed:]

    def eof_received(self) -> bool:
        return False  # the broker closed its side: close ours (connection_lost follows)


async def open_connection(
    host: str, port: int, ssl: Any, clean_session: bool, keepalive: int, *, connection_state: Any,
    package_handler: Any, logger: Any = None,
) -> MQTTConnection:  # fmt: skip
    """`MQTTConnection.create_connection`, with `DirectReadProtocol` for gmqtt's protocol."""
    loop = asyncio.get_running_loop()
    factory = partial(DirectReadProtocol, connection_state=connection_state, id_generator=package_handler.id_generator)
    transport, protocol = await loop.create_connection(factory, host, port, ssl=ssl)
    return MQTTConnection(transport, protocol, clean_session, keepalive, package_handler=package_handler,
                          logger=logger)  # fmt: skip


def lean_publish(handler: Any) -> None:
    """Route a gmqtt MqttPackageHandler's PUBLISH packets through `_publish` (see the module's docstring)."""
    handler._handle_publish_packet = partial(_publish, handler, handler._handle_publish_packet)
    handler._handler_cache.clear()  # it caches the bound method per packet type


def _publish(handler: Any, gmqtts: Any, cmd: int, raw: bytes) -> None:
    qos = (cmd & 0x06) >> 1
    topic_end = 2 + int.from_bytes(raw[:2], "big")
    start = topic_end + (2 if qos else 0)
    if (qos > 1 or len(raw) < start or topic_end == 2 or not handler._optimistic_acknowledgement
            or handler._connection_state.protocol_version >= MQTTv50):  # fmt: skip
        gmqtts(cmd, raw)  # QoS 2, properties, a topic alias, a malformed packet: as gmqtt does
        return
    try:
        topic = raw[2:topic_end].decode("utf-8")
    except UnicodeDecodeError:
        gmqtts(cmd, raw)
        return
    properties = {"dup": (cmd & 0x08) >> 3, "retain": cmd & 0x01}
    if qos:
        handler._send_puback(int.from_bytes(raw[topic_end:start], "big"))  # optimistic, as gmqtt's: first
    run_coroutine_or_function(handler.on_message, topic, raw[start:], qos, properties)
