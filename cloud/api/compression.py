"""gzip for the console API's answers: compressed when the client accepts it and the answer is big enough.

`GET /api/v1/devices` is ~750 bytes of JSON a device (150 KB at 200 devices, 7.5 MB at 10,000) and
compresses ~10x. Answers of the full app go through Starlette's GZipMiddleware (`add_compression`); a
cached answer (`CachedAnswer`: the read cache's and /healthz's values) is compressed once when it is made,
on the worker thread that rendered it, and every request that accepts gzip gets those same bytes, from the
route or from the fast lane, instead of paying the compression on every request.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

from fastapi import FastAPI, Response
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import Scope

# below ~1 KB the gzip header and the CPU cost more than the bytes saved
MIN_BYTES = 1024
# level 6: within a few % of level 9's size on this JSON at about a third of its CPU (Starlette's default is 9)
LEVEL = 6
VARY = (b"vary", b"Accept-Encoding")


@dataclass(frozen=True)
class CachedAnswer:
    """A JSON answer kept for many requests: its bytes, gzipped once when worth it, and extra headers
    (a paged list's `Link`)."""

    body: bytes
    gzipped: bytes | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def of(cls, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> CachedAnswer:
        gzipped = gzip.compress(body, LEVEL, mtime=0) if len(body) >= MIN_BYTES else None
        return cls(body, gzipped, headers)

    def raw_headers(self, scope: Scope) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The body to send for this request and its headers (content type, length, encoding, extras)."""
        headers = [(b"content-type", b"application/json"), *self.headers]
        body = self.body
        if self.gzipped is not None:
            headers.append(VARY)  # the answer depends on Accept-Encoding: a shared cache must keep both
            if accepts_gzip(scope):
                body = self.gzipped
                headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(body)).encode()))
        return body, headers

    def response(self, scope: Scope) -> Response:
        body, headers = self.raw_headers(scope)
        response = Response(body)
        response.raw_headers = headers
        return response


def accepts_gzip(scope: Scope) -> bool:
    """Accept-Encoding names gzip with a q other than 0 (RFC 9110 12.5.3; "*" counts too)."""
    for name, value in scope.get("headers", ()):
        if name != b"accept-encoding":
            continue
        for item in value.decode("latin-1").lower().split(","):
            coding, _, params = item.strip().partition(";")
            if coding.strip() in ("gzip", "x-gzip", "*"):
                return _q(params) > 0
    return False


def _q(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def add_compression(app: FastAPI) -> None:
    """gzip for the full app's big answers (the fast lane's are compressed already; Starlette leaves an
    answer that has a Content-Encoding alone)."""
    app.add_middleware(GZipMiddleware, minimum_size=MIN_BYTES, compresslevel=LEVEL)
