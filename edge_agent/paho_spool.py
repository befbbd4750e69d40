"""`SpooledPahoTransport`: a PahoTransport whose QoS 1 publishes wait in a disk `Spool` until the broker
acknowledges them (PUBACK), so an agent that restarts, or loses power, loses nothing it had said.

How it works:
* `publish` writes the message to the spool and returns; a pump thread hands spooled messages to paho in
  order, at most `window` unacknowledged at a time (the spool, not paho's memory, is the queue).
* paho's `on_publish` (the broker's PUBACK) queues (message id, reason); the pump removes the message from
  the spool. Only the pump touches the id map, so an acknowledgement can never overtake its own publish.
* `stop()` while connected waits up to `stop_drain_s` (2 s) for the broker to take what is spooled.
* A new process starts from the spool file: whatever was not acknowledged is sent again. A message the
  broker had but did not acknowledge before a crash arrives twice; the cloud stores (device_id, seq) once.
* MQTT 5 only: PUBACK reason 16 (no matching subscribers) means the broker threw the message away. A
  non-retained one stays in the spool and is sent again after 1, 2, 4, ... s, at most
  `no_subscriber_resends` times, then dropped and counted in `unheard`. The cloud's persistent session
  makes this rare, except on Mosquitto 2.0 with shared subscriptions: it restores a persistent session's
  `$share` subscriptions not at all after a restart, so until the cloud reconnects and subscribes again
  nobody hears. A retained message is kept by the broker anyway.
* QoS 0 messages and topics `spool_filter` refuses go straight to paho, as before.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.deferred import defer

defer("urllib.request")  # before paho's import, as in edge_agent.paho_transport

import paho.mqtt.client as mqtt  # noqa: E402 - after defer()
from paho.mqtt.reasoncodes import ReasonCode  # noqa: E402

from edge_agent.paho_transport import PahoTransport  # noqa: E402
from edge_agent.spool import Spool, Spooled  # noqa: E402
from edge_agent.transport import TransportError  # noqa: E402
from protocols import topics  # noqa: E402

log = logging.getLogger(__name__)

NO_MATCHING_SUBSCRIBERS = 16  # MQTT 5 PUBACK reason code
_IDLE_WAKE_S = 0.5  # the pump looks again this often even unwoken (e.g. after paho's queue was full)


class SpooledPahoTransport(PahoTransport):
    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        spool_path: Path | str,
        spool_max_messages: int = 10_000,
        spool_filter: Callable[[str], bool] = lambda _topic: True,
        window: int = 100,
        no_subscriber_resends: int = 6,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, client_id, **kwargs)
        self.spool_path = Path(spool_path)
        self.spool_max_messages = spool_max_messages
        self.unheard = 0  # messages no subscriber received after every resend (MQTT 5 only)
        self.resent = 0  # times a message was sent again after reason 16
        self.refused = 0  # messages the broker refused (PUBACK reason >= 128): resending would not help
        self._spool: Spool | None = Spool(self.spool_path, max_messages=spool_max_messages)
        self._filter = spool_filter
        self._window = window
        self._max_resends = no_subscriber_resends
        self._acks: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._inflight: dict[int, Spooled] = {}  # paho message id -> message (pump thread only)
        self._last_handed = 0  # highest spool id handed to paho
        self._parked: dict[int, tuple[Spooled, float]] = {}  # spool id -> (message no one took, resend at)
        self._resent: dict[int, int] = {}  # spool id -> times sent again after reason 16
        self._pump_thread: threading.Thread | None = None
        self._pumping = False
        self._client.on_publish = self._handle_publish

    stop_drain_s = 2.0  # a stop while connected waits this long for the broker to take what is spooled

    @property
    def spool(self) -> Spool | None:
        return self._spool

    def spool_drops(self) -> dict[str, int]:
        """Messages the full spool dropped, per kind (the agent reports them in its telemetry windows)."""
        spool = self._spool
        return spool.drops() if spool is not None else {}

    @property
    def parked(self) -> int:
        """Messages waiting to be sent again because no subscriber took them (MQTT 5 PUBACK reason 16)."""
        return len(self._parked)

    def start(self) -> None:
        if self._spool is None:
            self._spool = Spool(self.spool_path, max_messages=self.spool_max_messages)
        if self._pump_thread is None:
            self._pumping = True
            self._pump_thread = threading.Thread(target=self._pump, name=f"edgefleet-spool-{self.client_id}",
                                                 daemon=True)
            self._pump_thread.start()
        super().start()

    def stop(self) -> None:
        self._drain(self.stop_drain_s)
        super().stop()  # no paho callbacks after this: every acknowledgement is in self._acks
        thread, self._pump_thread = self._pump_thread, None
        if thread is not None:
            self._pumping = False
            self._wake.set()
            thread.join(10)
        if self._spool is not None:
            self._take_acks(self._spool)
            self._spool.close()
            self._spool = None

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        spool = self._spool
        if qos == 0 or spool is None or not self._filter(topic):
            super().publish(topic, payload, qos, retain)
            return
        try:
            topics.check_topic_name(topic)
        except topics.TopicError as exc:
            raise TransportError(str(exc)) from None
        if qos not in (1, 2):
            raise TransportError(f"qos must be 0, 1 or 2, got {qos!r}")
        try:
            spool.add(topic, payload, qos, retain)
        except sqlite3.Error as exc:  # a full disk, or stop() closing the spool meanwhile: paho's memory then
            log.warning("outbox spool %s: %s; message to %s kept in memory only", self.spool_path, exc, topic)
            super().publish(topic, payload, qos, retain)
            return
        self._wake.set()

    def _drain(self, timeout_s: float) -> None:
        """While connected, wait (at most timeout_s) until the broker has everything spooled but parked:
        the last words of a stopping agent (its final window, presence offline) go out now, not next start."""
        spool, deadline = self._spool, time.monotonic() + timeout_s
        while spool is not None and self._pump_thread is not None and self.connected:
            if len(spool) <= len(self._parked) or time.monotonic() >= deadline:
                return
            self._wake.set()
            time.sleep(0.01)

    # -- paho's network thread ---------------------------------------------------------------------------

    def _handle_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, reason: ReasonCode, _props: Any) -> None:
        self._acks.put((mid, reason.value if reason is not None else 0))
        self._wake.set()

    # -- the pump thread -------------------------------------------------------------------------------

    def _pump(self) -> None:
        while self._pumping:
            self._wake.wait(_IDLE_WAKE_S)
            self._wake.clear()
            spool = self._spool
            if spool is None or not self._pumping:
                continue
            try:
                self._take_acks(spool)
                self._resend_due()
                self._fill(spool)
            except Exception:  # noqa: BLE001 - the pump must outlive a bad moment (a closed spool, a full disk)
                log.exception("outbox spool pump of %s", self.client_id)

    def _resend_due(self) -> None:
        now = time.monotonic()
        for message in [message for message, due in self._parked.values() if due <= now]:
            if not self._hand(message):
                return
            del self._parked[message.id]
            self._resent[message.id] = self._resent.get(message.id, 0) + 1
            self.resent += 1

    def _fill(self, spool: Spool) -> None:
        room = self._window - len(self._inflight)
        if room <= 0:
            return
        for message in spool.after(self._last_handed, room):
            if not self._hand(message):
                return  # paho's queue is full: try again on the next wake
            self._last_handed = message.id

    def _hand(self, message: Spooled) -> bool:
        try:
            mid = self._send(message.topic, message.payload, message.qos, message.retain)
        except TransportError as exc:
            log.debug("spooled message %d not handed to paho yet: %s", message.id, exc)
            return False
        self._inflight[mid] = message
        return True

    def _take_acks(self, spool: Spool) -> None:
        while True:
            try:
                mid, code = self._acks.get_nowait()
            except queue.Empty:
                return
            message = self._inflight.pop(mid, None)
            if message is None:
                continue  # a QoS 0 or unspooled message
            if code == NO_MATCHING_SUBSCRIBERS and not message.retain:
                resends = self._resent.get(message.id, 0)
                if resends < self._max_resends:
                    self._parked[message.id] = (message, time.monotonic() + 2.0**resends)
                    continue
                self.unheard += 1
                log.warning("no subscriber took %s after %d resends; dropped", message.topic, resends)
            elif code >= 0x80:
                self.refused += 1
                log.warning("broker refused the message to %s (reason %d); dropped", message.topic, code)
            self._resent.pop(message.id, None)
            spool.remove(message.id)
