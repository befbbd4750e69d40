"""Which chunks of an artifact to ask for next: a sliding window with timeouts and bounded retries (pure).

A chunk is *missing* until requested, *in flight* until it arrives or its deadline passes, then missing
again with one more retry counted; a chunk that needs more than `max_retries` retries fails the download.

With fan-out (the cloud keeps every chunk retained on fleet-wide topics) the chunks are first *expected*:
in flight without a request, their deadline pushed back while fan-out chunks keep arriving. One that does
not come by its deadline becomes missing with no retry counted, and only then is asked for on the
device's own topics. The deadline runs from the broker's SUBACK: before it, the retained chunks cannot come
(a broker busy with a fleet's subscriptions acknowledges late), so until then they wait `suback_timeout_s`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChunkPolicy:
    window: int = 8  # chunks in flight at once
    timeout_s: float = 10.0
    max_retries: int = 5
    suback_timeout_s: float = 30.0  # fan-out chunks awaited this long while their subscription is unacknowledged


@dataclass
class ChunkTracker:
    total: int
    policy: ChunkPolicy
    received: set[int] = field(default_factory=set)
    in_flight: dict[int, float] = field(default_factory=dict)  # index -> deadline (monotonic s)
    retries: dict[int, int] = field(default_factory=dict)
    expected: set[int] = field(default_factory=set)  # in flight from the fan-out topics, never requested

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

    def expect_fanout(self, now_s: float, *, subscribed: bool = True) -> None:
        """Every missing chunk (and every one already expected) is awaited from the fan-out topics: for
        timeout_s from now once subscribed (the SUBACK came), for suback_timeout_s while not yet."""
        wait_s = self.policy.timeout_s if subscribed else self.policy.suback_timeout_s
        for index in self.missing():
            self.expected.add(index)
        for index in self.expected:
            self.in_flight[index] = now_s + wait_s

    def fanout_refused(self) -> None:
        """The broker refused the fan-out subscription: the chunks expected from it are missing now."""
        for index in self.expected:
            self.in_flight.pop(index, None)
        self.expected.clear()

    def fanout_progress(self, now_s: float) -> None:
        """A chunk arrived: the link is busy delivering, so the chunks still expected get more time."""
        for index in self.expected:
            self.in_flight[index] = now_s + self.policy.timeout_s

    def mark_received(self, index: int) -> bool:
        """Record an arrived chunk; False if it was already there (a duplicate)."""
        self.in_flight.pop(index, None)
        self.expected.discard(index)
        if index in self.received:
            return False
        self.received.add(index)
        return True

    def mark_lost(self, index: int) -> bool:
        """A chunk the cloud could not serve, or that arrived damaged: retry it. False if out of retries."""
        self.in_flight.pop(index, None)
        self.expected.discard(index)
        self.retries[index] = self.retries.get(index, 0) + 1
        return self.retries[index] <= self.policy.max_retries

    def expire(self, now_s: float) -> tuple[list[int], bool]:
        """Chunks whose deadline passed become missing again. Returns them, and False if any is out of retries."""
        late = sorted(i for i, deadline in self.in_flight.items() if deadline <= now_s)
        not_delivered = [i for i in late if i in self.expected]
        for index in not_delivered:  # the fan-out did not bring it: ask for it, no retry counted
            self.in_flight.pop(index)
            self.expected.discard(index)
        ok = all([self.mark_lost(i) for i in late if i not in not_delivered])
        return late, ok

    def renew(self, now_s: float) -> list[int]:
        """After a reconnect requests in flight may be lost: ask again for them (no retry counted). Expected
        fan-out chunks come again with the renewed subscription's retained messages: they only get time."""
        for index in self.in_flight:
            self.in_flight[index] = now_s + self.policy.timeout_s
        return sorted(set(self.in_flight) - self.expected)
