"""MQTT helpers for tests: a thread-safe inbox to hand to a transport as its message handler."""

from __future__ import annotations

import threading

from support.net import wait_until


class Inbox:
    """Collects (topic, payload) pairs; `transport.set_message_handler(inbox)`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self._messages.append((topic, payload))

    @property
    def messages(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self._messages)

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.messages]

    def payloads(self, topic: str | None = None) -> list[bytes]:
        return [payload for t, payload in self.messages if topic is None or t == topic]

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> bool:
        """True once at least count messages have arrived, False after timeout_s."""
        return bool(wait_until(lambda: len(self) >= count, timeout_s))

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
