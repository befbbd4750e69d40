"""gmqtt's client reading its socket without a stream: packets parsed in `data_received`, as the bytes come.

gmqtt's protocol feeds every read to an asyncio StreamReader, and a task of its own per connection wakes to
read it back (a copy into the reader's buffer, a copy out of it, one more loop turn per read) before it parses
the packets. A simulated fleet's loop holds thousands of connections and an update brings each ~100 KB of
chunks: here the packets of a read are parsed at once from the bytes asyncio hands over, and only a packet cut
at the read's end is kept (in a bytearray) for the next. The packets, their order and their handling are
gmqtt's: `MQTTProtocol._read_packet` parses them and the client's handler acts on them.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from gmqtt.mqtt.connection import MQTTConnection
from gmqtt.mqtt.protocol import BaseMQTTProtocol, MQTTProtocol

__all__ = ["DirectReadProtocol", "open_connection"]


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
