"""A per-address budget for bearer tokens the API has to look up: made-up tokens cannot flood the database.

Judging a token reads its id's record from the database (kept `api_token_cache_s` per id, cloud.api.auth).
A made-up token has an id nobody issued, so a flooder that varies the id cost one database lookup per
request, from any address, unlimited. `AuthBudget` stands before that lookup, cheapest check first:

1. An id of the shape the cloud issues (`<random><tag>`, cloud.identity.token_tags) whose tag no kept key
   made is refused at once: one HMAC, no lookup, nothing charged.
2. A token refused in the last `refused_ttl_s` (its SHA-256 in a bounded negative cache) is refused again
   at once: no lookup, nothing charged. A refused token never becomes valid (ids are random, revocation and
   expiry are final), so replaying one costs the cloud a hash.
3. An id with our tag, or one this process admitted (bounded, least recently used forgotten), is looked up
   as before: at most one lookup per id per `api_token_cache_s`, whatever secret comes with it, and never
   out of the address's budget. An operator behind the same NAT address as a flooder is served, also on
   its first request after a restart.
4. Any other token (an id issued before tags, or a made-up one of that shape) spends one request of its
   client address's budget (`cloud.token_buckets.ClientRate`: `auth_lookup_burst` at once,
   `auth_lookups_per_s` on average); past it the answer is 429 with Retry-After, before any lookup.

The limit this leaves: a token issued before ids carried a tag, not yet admitted by this process (its first
request after a restart), shares its address's budget with a flooder there, so it may get 429 until a try
wins a refilled request: reissue such tokens. Per process and per client address, as the public paths'
limit (cloud.api.public_limit): behind a reverse proxy every client has the proxy's address.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from cloud.errors import TooManyRequestsError
from cloud.identity.token_tags import API_TOKEN, Tag, TagKeys
from cloud.identity.tokens import parse_token
from cloud.token_buckets import ClientRate


class AuthBudget:
    """Before a token's lookup `admissible` (parsed, not a forged tag, not refused recently) and `charge` (free
    for our tagged ids, else its address's budget or 429); after it, `judged`. Whoever calls `admissible`
    reloads `tags` first when they are stale. Thread-safe: the API checks on the event loop, the console in
    worker threads."""

    def __init__(self, rate: ClientRate, *, refused_ttl_s: float = 60.0, max_remembered: int = 10_000,
                 clock: Callable[[], float] = time.monotonic, tags: TagKeys | None = None) -> None:  # fmt: skip
        self.rate, self.refused_ttl_s, self.max_remembered, self._clock = rate, refused_ttl_s, max_remembered, clock
        self._refused: OrderedDict[bytes, float] = OrderedDict()  # token digest -> refused until
        self._admitted: OrderedDict[str, None] = OrderedDict()  # token ids, most recently admitted last
        self._lock = threading.Lock()
        self.tags = tags or TagKeys()  # reloaded by the caller when stale (a database read)
        self.lookups_spared = 0  # requests answered without a lookup (tests and benchmarks read it)
        self.forged = 0  # of those, ids with a tag we did not make

    @classmethod
    def of(cls, app: Any) -> AuthBudget:
        """The app's budget, made on first use from its settings (auth_lookups_per_s, auth_lookup_burst)."""
        budget: AuthBudget | None = getattr(app.state, "auth_budget", None)
        if budget is None:
            settings = app.state.settings
            rate = ClientRate(settings.auth_lookups_per_s, settings.auth_lookup_burst)
            budget = app.state.auth_budget = cls(rate, tags=getattr(app.state, "tag_keys", None))
        return budget

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def admissible(self, token: str) -> tuple[str, str] | None:
        """The token's (id, secret) when it may be looked up; None to refuse it unlooked-up (not one of ours,
        or refused within refused_ttl_s)."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        if self.tags.judge(parsed[0], API_TOKEN) is Tag.FORGED:
            with self._lock:
                self.lookups_spared += 1
                self.forged += 1
            return None
        digest = self._digest(token)
        with self._lock:
            until = self._refused.get(digest)
            if until is None:
                return parsed
            if until <= self._clock():
                del self._refused[digest]
                return parsed
            self.lookups_spared += 1
            return None

    def charge(self, client: str, token_id: str) -> None:
        """Allow one lookup of token_id for client (an admitted id, or one request of the address's budget),
        else TooManyRequestsError with the seconds to wait."""
        if self.tags.judge(token_id, API_TOKEN) is Tag.OURS:
            return  # an id we issued: at most one lookup per api_token_cache_s, from any address
        with self._lock:
            if token_id in self._admitted:
                self._admitted.move_to_end(token_id)
                return
            wait = self.rate.take(client)
            if wait:
                self.lookups_spared += 1
        if wait:
            raise TooManyRequestsError(f"too many unknown API tokens from this address; retry in {wait} s", wait)

    def judged(self, token: str, token_id: str, operator: object | None) -> None:
        """After a lookup: remember the id as admitted, or the token as refused."""
        with self._lock:
            if operator is not None:
                remembered: OrderedDict[Any, Any] = self._admitted
                remembered[token_id] = None
                remembered.move_to_end(token_id)
            else:
                remembered = self._refused
                digest = self._digest(token)
                remembered[digest] = self._clock() + self.refused_ttl_s
                remembered.move_to_end(digest)
            while len(remembered) > self.max_remembered:
                remembered.popitem(last=False)
