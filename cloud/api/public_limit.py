"""A per-client-address rate limit on the paths anyone may call without a token.

/healthz, an open /metrics, the console's sign-in and static assets, and /docs (its assets and the OpenAPI
document) answer without an operator token, so anyone who can reach the port can flood them. `PublicGate`
runs first in the app (`cloud.api.fast_reads.ConsoleApp`), before routing and every middleware: a client
address over its budget on those paths gets a 429 with Retry-After that costs a few microseconds and no
database, so a flood mostly costs the attacker's own connections while operators' authenticated requests
(never counted here, whatever address they come from) go on being served.

The 429 is held back `hold_s` (1 s) before it is sent, costing nothing but a sleeping coroutine: a flooder
that waits for each answer before it sends the next (every HTTP/1.1 client on a kept-alive connection, wrk
included) is slowed to one request a second per connection. Answered at once, the refusals were cheap but
came back so fast that 100 such connections sent ~5,700 requests a second, which alone kept the event loop
busy: an operator's p99 beside them was 320 ms against 400 ms unlimited (benchmarks/console_flood.py). At
most `max_held` refusals wait at once; past that they are answered at once with `Connection: close`.

The budget is a token bucket per address: `per_s` requests a second on average, bursts of `burst` (a
browser loading the sign-in page and its assets, a health checker, a scraper stay far below). Memory is
bounded: at most `max_clients` addresses, the least recently seen forgotten first. Per process: behind a
reverse proxy every client shares the proxy's address (limit there, or raise the budget).

Enrollment (`POST /api/v1/enroll`) is not counted: a factory line enrolling hundreds of devices from one
NAT address is legitimate; what floods it with guesses is cut off by `cloud.api.throttle.RefusalThrottle`.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import Scope, Send

from cloud.errors import TooManyRequestsError
from cloud.token_buckets import ClientRate, client_address

PUBLIC_PATHS = frozenset({"/", "/healthz", "/docs", "/redoc", "/openapi.json", "/console/signin"})
PUBLIC_PREFIXES = ("/docs/", "/docs-assets/", "/console/static/")  # the offline docs' and the console's assets
SCRAPE_PATH = "/metrics"  # public only when settings leave it open (metrics_needs_token false)


class PublicGate:
    """Answers 429 to a client over its budget on a public path (`refuse`); lets everything else through."""

    def __init__(self, rate: ClientRate, *, metrics_public: bool, hold_s: float = 1.0, max_held: int = 1024) -> None:
        self.rate, self.metrics_public, self.hold_s, self.max_held = rate, metrics_public, hold_s, max_held
        self.held = 0  # refusals waiting out hold_s now

    def is_public(self, path: str) -> bool:
        return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or (self.metrics_public and path == SCRAPE_PATH)

    async def refuse(self, scope: Scope, send: Send) -> bool:
        """True when it sent a 429 (the request is answered), else False."""
        if scope["type"] != "http" or not self.is_public(scope["path"]):
            return False
        wait = self.rate.take(client_address(scope))
        if not wait:
            return False
        error = TooManyRequestsError(f"too many requests to public paths from this address; retry in {wait} s", wait)
        body = json.dumps({"error": error.code, "detail": str(error)}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"retry-after", str(wait).encode())]  # fmt: skip
        if self.hold_s > 0 and self.held < self.max_held:
            self.held += 1
            try:
                await asyncio.sleep(min(self.hold_s, wait))  # the flooder's next request waits for this answer
            finally:
                self.held -= 1
        else:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True
