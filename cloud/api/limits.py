"""Bounded requests: a cap on body size (ASGI middleware) and no NUL in path or query parameters.

`BodySizeLimit` answers 413 before the app sees a body over the cap: at once when Content-Length says so,
else as soon as the streamed (chunked) bytes pass it; it stops reading there. A body within the cap is
buffered (at most the cap) and handed on in one piece, which is how FastAPI reads JSON bodies anyway.
Body fields are held to `cloud.db.bounds` by the request schemas.
"""

from __future__ import annotations

import json

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.errors import InvalidRequestError, PayloadTooLargeError

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # a disconnect: let the app see it
                await self.app(scope, _replay(None, message, receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(send)
                return
            more = message.get("more_body", False)
        await self.app(scope, _replay(bytes(body), None, receive), send)

    async def _refuse(self, send: Send) -> None:
        error = PayloadTooLargeError(f"the request body is over {self.max_bytes} bytes")
        payload = json.dumps({"error": error.code, "detail": str(error)}).encode()
        # "connection: close": the rest of the body is never read, so the connection cannot be reused
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                   (b"connection", b"close")]
        await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes | None, first: Message | None, receive: Receive) -> Receive:
    """A receive that yields the buffered body (or the message already taken) once, then the real one."""
    pending: list[Message] = [first] if first is not None else [{"type": "http.request", "body": body or b""}]

    async def _receive() -> Message:
        return pending.pop() if pending else await receive()

    return _receive


async def reject_nul(request: Request) -> None:
    """An app-wide dependency: NUL in a path or query parameter is a 422, not a database error (500).
    Async because every request runs it and it does no I/O: no hop to a worker thread."""
    for where, params in (("path", request.path_params.items()), ("query", request.query_params.multi_items())):
        for name, value in params:
            if isinstance(value, str) and "\x00" in value:
                raise InvalidRequestError(f"{where} parameter {name!r} contains NUL (\\x00)")
