"""A per-address budget for bearer tokens the API has to look up: made-up tokens cannot flood the database.

Judging a token reads its id's record from the database (kept `api_token_cache_s` per id, cloud.api.auth).
A made-up token has an id nobody issued, so a flooder that varies the id cost one database lookup per
request, from any address, unlimited. `AuthBudget` stands before that lookup, cheapest check first:

1. A token refused in the last `refused_ttl_s` (its SHA-256 in a bounded negative cache) is refused again
   at once: no lookup, nothing charged. A refused token never becomes valid (ids are random, revocation and
   expiry are final), so replaying one costs the cloud a hash.
2. A token id this process admitted (bounded, least recently used forgotten) is looked up as before: at most
   one lookup per id per `api_token_cache_s`, whatever secret comes with it. An operator behind the same
   NAT address as a flooder keeps being served.
3. Any other token spends one request of its client address's budget (`cloud.token_buckets.ClientRate`:
   `auth_lookup_burst` at once, `auth_lookups_per_s` on average); past it the answer is 429 with
   Retry-After, before any lookup.

The limit this leaves: an operator whose token this process has not admitted yet (its first request after
a restart) shares its address's budget with a flooder there, so it may get 429 until a try wins a refilled
request. Per process and per client address, as the public paths' limit (cloud.api.public_limit): behind a
reverse proxy every client has the proxy's address.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

from cloud.token_buckets import ClientRate


class AuthBudget:
    def __init__(self, rate: ClientRate, *, refused_ttl_s: float = 60.0, max_remembered: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.rate, self.refused_ttl_s, self.max_remembered, self._clock = rate, refused_ttl_s, max_remembered, clock
        self._refused: OrderedDict[bytes, float] = OrderedDict()  # token digest -> refused until
        self._admitted: OrderedDict[str, None] = OrderedDict()  # token ids, most recently admitted last
        self.lookups_spared = 0  # requests answered without a lookup (tests and benchmarks read it)

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def refused_before(self, token: str) -> bool:
        """True when this exact token was refused within refused_ttl_s: refuse it again, unlooked-up."""
        until = self._refused.get(self._digest(token))
        if until is None:
            return False
        if until <= self._clock():
            del self._refused[self._digest(token)]
            return False
        self.lookups_spared += 1
        return True

    def wait_before_lookup(self, client: str, token_id: str) -> int:
        """0 when the token's id may be looked up now (an admitted id, or the address's budget spent by
        one), else the whole seconds the client should wait."""
        if token_id in self._admitted:
            self._admitted.move_to_end(token_id)
            return 0
        wait = self.rate.take(client)
        if wait:
            self.lookups_spared += 1
        return wait

    def admitted(self, token_id: str) -> None:
        self._admitted[token_id] = None
        self._admitted.move_to_end(token_id)
        while len(self._admitted) > self.max_remembered:
            self._admitted.popitem(last=False)

    def refused(self, token: str) -> None:
        self._refused[self._digest(token)] = self._clock() + self.refused_ttl_s
        self._refused.move_to_end(self._digest(token))
        while len(self._refused) > self.max_remembered:
            self._refused.popitem(last=False)
