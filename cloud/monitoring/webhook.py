"""The outgoing alert webhook: HMAC-signed JSON POSTs, retried with backoff, from a bounded queue.

`send` never blocks: an event goes into a bounded queue (full: dropped and counted, never waited on), and
one daemon thread delivers them in order. A delivery is retried on a network error, a timeout, 408, 429 or
a 5xx, waiting 1, 2, 4 ... s (capped, with jitter) up to `attempts` tries; another 4xx is the receiver
refusing it for good, and it is dropped (counted, logged).

Each request carries
    X-EdgeFleet-Event       alert.raised | alert.cleared
    X-EdgeFleet-Delivery    a unique id (the receiver drops a retry it already processed)
    X-EdgeFleet-Timestamp   unix seconds when signed
    X-EdgeFleet-Signature   sha256=HEX(HMAC-SHA256(secret, timestamp + "." + body))
so the receiver can check the body came from this cloud and is recent (`verify`: constant-time compare,
a tolerance on the timestamp against replays).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from cloud.mqtt.worker import Counters

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-EdgeFleet-Signature"
TIMESTAMP_HEADER = "X-EdgeFleet-Timestamp"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now_s: float | None = None,
           tolerance_s: float = 300.0) -> bool:  # fmt: skip
    """What a receiver does: the signature matches and the timestamp is within tolerance_s of now."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now_s is None else now_s) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


@dataclass
class WebhookStats(Counters):
    queued: int = 0
    delivered: int = 0
    retried: int = 0  # attempts after the first
    failed: int = 0  # given up on: refused (4xx) or out of attempts
    dropped: int = 0  # the queue was full


class WebhookSender:
    def __init__(
        self, url: str, secret: str, *, max_queue: int = 1_000, attempts: int = 6, timeout_s: float = 5.0,
        backoff_s: float = 1.0, max_backoff_s: float = 60.0, client: httpx.Client | None = None,
    ) -> None:  # fmt: skip
        if not secret:
            raise ValueError("a webhook needs a secret: receivers must be able to check the signature")
        self.url = url
        self._secret = secret
        self.attempts = max(1, attempts)
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.stats = WebhookStats()
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=max_queue)
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0
        self._thread = threading.Thread(target=self._run, name="edgefleet-webhook", daemon=True)
        self._thread.start()

    def send(self, event: str, payload: dict[str, Any]) -> bool:
        """Queue an event (never blocks); False if the queue is full and the event was dropped."""
        body = json.dumps({"event": event, "sent_at_ms": int(time.time() * 1000), **payload},
                          separators=(",", ":"), sort_keys=True).encode()  # fmt: skip
        try:
            with self._idle:
                self._queue.put_nowait((event, body))
                self._busy += 1
        except queue.Full:
            self.stats.add(dropped=1)
            log.warning("webhook queue full (%d): dropping a %s event", self._queue.maxsize, event)
            return False
        self.stats.add(queued=1)
        return True

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every queued event is delivered or given up on (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event, body = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._deliver(event, body)
            except Exception:  # a bug here must not end deliveries for good
                self.stats.add(failed=1)
                log.exception("webhook delivery of a %s event failed", event)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def _deliver(self, event: str, body: bytes) -> None:
        delivery = uuid.uuid4().hex
        for attempt in range(self.attempts):
            if attempt:
                self.stats.add(retried=1)
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
                if self._stop.wait(delay):
                    return
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json", "X-EdgeFleet-Event": event, "X-EdgeFleet-Delivery": delivery,
                TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            }  # fmt: skip
            try:
                response = self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                log.info("webhook %s: %s (attempt %d of %d)", self.url, exc, attempt + 1, self.attempts)
                continue
            if response.is_success:
                self.stats.add(delivered=1)
                return
            if response.status_code not in RETRY_STATUSES:
                self.stats.add(failed=1)
                log.warning("webhook %s refused a %s event: HTTP %d", self.url, event, response.status_code)
                return
            status = response.status_code
            log.info("webhook %s: HTTP %d (attempt %d of %d)", self.url, status, attempt + 1, self.attempts)
        self.stats.add(failed=1)
        log.warning("webhook %s: gave up on a %s event after %d attempts", self.url, event, self.attempts)
