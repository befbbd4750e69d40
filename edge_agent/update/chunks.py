"""Which chunks of an artifact to ask for next: a sliding window with timeouts and bounded retries (pure).

A chunk is *missing* until requested, *in flight* until it arrives or its deadline passes, then missing
again with one more retry counted; a chunk that needs more than `max_retries` retries fails the download.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChunkPolicy:
    window: int = 8  # chunks in flight at once
    timeout_s: float = 10.0
    max_retries: int = 5


@dataclass
class ChunkTracker:
    total: int
    policy: ChunkPolicy
    received: set[int] = field(default_factory=set)
    in_flight: dict[int, float] = field(default_factory=dict)  # index -> deadline (monotonic s)
    retries: dict[int, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.received) >= self.total

    def missing(self) -> list[int]:
        return [i for i in range(self.total) if i not in self.received and i not in self.in_flight]

    def next_batch(self, now_s: float) -> list[int]:
        """Fill the window: mark the next missing chunks in flight and return them."""
        free = self.policy.window - len(self.in_flight)
        batch = self.missing()[: max(0, free)]
        for index in batch:
            self.in_flight[index] = now_s + self.policy.timeout_s
        return batch

    def mark_received(self, index: int) -> bool:
        """Record an arrived chunk; False if it was already there (a duplicate)."""
        self.in_flight.pop(index, None)
        if index in self.received:
            return False
        self.received.add(index)
        return True

    def mark_lost(self, index: int) -> bool:
        """A chunk the cloud could not serve, or that arrived damaged: retry it. False if out of retries."""
        self.in_flight.pop(index, None)
        self.retries[index] = self.retries.get(index, 0) + 1
        return self.retries[index] <= self.policy.max_retries

    def expire(self, now_s: float) -> tuple[list[int], bool]:
        """Chunks whose deadline passed become missing again. Returns them, and False if any is out of retries."""
        late = sorted(i for i, deadline in self.in_flight.items() if deadline <= now_s)
        ok = all([self.mark_lost(i) for i in late])
        return late, ok

    def renew(self, now_s: float) -> list[int]:
        """After a reconnect requests in flight may be lost: ask again for them (no retry counted)."""
        for index in self.in_flight:
            self.in_flight[index] = now_s + self.policy.timeout_s
        return sorted(self.in_flight)
