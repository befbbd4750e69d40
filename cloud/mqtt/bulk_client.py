"""The cloud's MQTT client: paho, reading many packets per socket read and writing their PUBACKs at once.

Stock paho reads a packet with three or more `recv` calls (its first byte, each length byte, the rest),
wakes its own `select` through a socket pair for every PUBACK it queues, and sends each PUBACK with a
`send` of its own: some eight system calls and a trip round its loop per message, each letting another
thread take the GIL. The cloud receives every device's reports, events and telemetry on one connection;
that was ~45 % of its CPU in a 1,000-device rollout (benchmarks/fleet.py with --profile). Here a `recv`
takes up to 64 KB into a buffer the packet reader is served from, the reader goes on until the socket has
nothing more (within a bound, so the acks still go out under a flood), and the PUBACKs queued meanwhile go
out together in one `send`.

Acknowledgement is unchanged: a QoS 1 message is acked once the message handler has returned, i.e. once it
is in the ingestion queue (whose `submit` blocks when full rather than dropping anything).

A clean stop (`disconnect()` from another thread, as `PahoTransport.stop()` and so `edgefleet up`'s
shutdown do) sends the ack of every message the handler has taken, and the broker has read them all when
it returns; otherwise the next session (a restart, or another worker leasing the same client id) gets those
messages again. Two things stood in the way, and the first was much worse here than with stock paho:
* the broker reads our acks after we have closed. Mosquitto (2.0) reads one packet per socket wake-up, and
  this client writes a whole read's acks (hundreds) at once; a new connection with the same client id that
  arrives meanwhile takes the session over and the old connection's unread acks are dropped. So after the
  DISCONNECT we half-close and wait (at most `_BROKER_CLOSE_WAIT_S`) for the broker to close: it does so
  only once it has read everything before the DISCONNECT.
* a DISCONNECT queued by the stopping thread while the handler runs goes out ahead of that message's ack,
  and the messages read after it were still handed over, their acks queued behind it. `disconnect()` now
  waits for a hand-over in progress, and once stopping, QoS 1/2 messages are not handed over (nor acked):
  the persistent session delivers them next time.
Both made `edgefleet up`'s shutdown (and a worker's stop) lose acks, so a quick restart got up to a
read's worth of messages again: duplicates, not losses (the cloud stores a window, event or sample at most
once per (device_id, seq)), but work done twice. A handler blocked at stop (ingestion queue full) delays
`disconnect()` as it delayed `loop_stop()` before.

Works over TLS too (an SSL socket's `recv` returns what it has decrypted). Written against paho-mqtt 2.x
internals (`_sock_recv`, `_packet_read`, `_packet_queue`, `_packet_write`, `_out_packet`, `_handle_publish`,
`_sock_close`, `_state`); the
tests/integration/test_cloud_bulk_client.py tests catch a paho that changed them.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import _ConnectionState
from paho.mqtt.enums import MQTTErrorCode

from edge_agent.paho_transport import PahoTransport

log = logging.getLogger(__name__)

_READ_BYTES = 65_536  # per recv: hundreds of device messages
_READS_PER_TURN = 16  # recvs before the loop turns to writing (the acks) and keepalive again
_MAX_ACKS_PER_SEND = 4_096
_PUBACK = mqtt.PUBACK  # a QoS 1 acknowledgement's first byte (no flags)
_BROKER_CLOSE_WAIT_S = 5.0  # after our DISCONNECT: ample for a loaded broker to read thousands of acks
_STOPPING = (_ConnectionState.MQTT_CS_DISCONNECTING, _ConnectionState.MQTT_CS_DISCONNECTED)


class BulkReadClient(mqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_buffer = b""
        self._read_pos = 0
        self._reads_left = _READS_PER_TURN
        # held from handing a message over until its ack is queued, and by disconnect(): no DISCONNECT between
        self._handover = threading.RLock()  # re-entrant: a handler may itself disconnect
        self._writing = False  # inside _packet_write: the only _sock_close there follows a written DISCONNECT

    def _sock_recv(self, bufsize: int) -> bytes:
        """Serve paho's small reads from the buffer, refilling it with one large recv when it is empty."""
        pos = self._read_pos
        if pos >= len(self._read_buffer):
            if self._reads_left <= 0:
                raise BlockingIOError  # this turn's reads are done: the rest waits in the socket (select sees it)
            self._reads_left -= 1
            data = super()._sock_recv(_READ_BYTES)  # BlockingIOError when there is nothing; b"" when closed
            if not data:
                return data
            self._read_buffer, pos = data, 0
        end = pos + bufsize
        self._read_pos = end
        return self._read_buffer[pos:end]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read packets until the socket has none (paho's reads one when nothing of ours is in flight, then
        selects again), then send the acks they queued."""
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        self._reads_left = _READS_PER_TURN
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN and self._read_pos >= len(self._read_buffer):
                break  # the buffer is empty, so select() tells the truth about what is left
        return self.loop_write() if self.want_write() else MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_close(self) -> None:
        if self._writing and self._sock is not None and self._state in _STOPPING:
            _await_peer_close(self._sock, _BROKER_CLOSE_WAIT_S)
        self._read_buffer, self._read_pos = b"", 0  # bytes of a dead connection mean nothing on the next one
        super()._sock_close()

    def disconnect(self, reasoncode: Any = None, properties: Any = None) -> MQTTErrorCode:
        with self._handover:  # a message being handed over gets its ack queued first
            return super().disconnect(reasoncode, properties)

    def _handle_publish(self) -> MQTTErrorCode:
        with self._handover:
            if self._state in _STOPPING and self._in_packet["command"] & 0x06:
                return MQTTErrorCode.MQTT_ERR_SUCCESS  # QoS 1/2 while stopping: not taken, so sent again next session
            return super()._handle_publish()

    def _packet_queue(
        self, command: int, packet: bytes | bytearray, mid: int, qos: int, info: mqtt.MQTTMessageInfo | None = None
    ) -> MQTTErrorCode:
        if command == _PUBACK and threading.current_thread() is self._thread:
            # an ack queued while reading: loop_read sends it with the others, no need to wake our own select
            self._out_packet.append(_out_packet(command, mid, qos, packet, info))
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_queue(command, packet, mid, qos, info)

    def _packet_write(self) -> MQTTErrorCode:
        self._join_acks()
        self._writing = True
        try:
            return super()._packet_write()
        finally:
            self._writing = False

    def _join_acks(self) -> None:
        """Make the PUBACKs at the head of the out queue one packet: one send instead of one each (paho does
        nothing on a PUBACK's completion, so the joined one needs no bookkeeping)."""
        out = self._out_packet
        if len(out) < 2 or out[0]["command"] != _PUBACK or out[0]["pos"] or out[1]["command"] != _PUBACK:
            return
        acks: list[Any] = []
        while out and out[0]["command"] == _PUBACK and not out[0]["pos"] and len(acks) < _MAX_ACKS_PER_SEND:
            acks.append(out.popleft())
        joined = b"".join(ack["packet"] for ack in acks)
        out.appendleft(_out_packet(_PUBACK, acks[-1]["mid"], 1, joined, None))


def _await_peer_close(sock: Any, timeout_s: float) -> None:
    """Half-close `sock` and read (discarding) until the peer closes it too, or timeout_s has passed.

    After our DISCONNECT the broker closes the connection once it has read it, hence everything before it.
    Publishes read meanwhile are dropped unacknowledged: the persistent session sends them again."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except (OSError, AttributeError):
        return  # already dead (or not a plain/TLS socket): nothing more to wait for
    deadline = time.monotonic() + timeout_s
    poller = select.poll()  # not select(): the cloud's process may hold descriptors numbered 1024 and above
    poller.register(sock, select.POLLIN)
    while (left := deadline - time.monotonic()) > 0:
        try:
            readable = poller.poll(left * 1000)
            if readable and not sock.recv(_READ_BYTES):
                return  # the broker closed
        except BlockingIOError:
            continue
        except (OSError, ValueError):
            return
    log.warning(
        "the broker did not close the connection within %.0f s of our DISCONNECT: it may not have read "
        "our last acks, and send those messages again",
        timeout_s,
    )


def _out_packet(command: int, mid: int, qos: int, packet: bytes | bytearray, info: Any) -> Any:
    """An entry of paho's out queue, as its own _packet_queue makes them."""
    return {"command": command, "mid": mid, "qos": qos, "pos": 0, "to_process": len(packet), "packet": packet,
            "info": info}  # fmt: skip


class CloudTransport(PahoTransport):
    """`PahoTransport` over a `BulkReadClient`: the cloud's connection (the device keeps stock paho)."""

    client_class = BulkReadClient
