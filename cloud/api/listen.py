"""The console API's listening socket, made so that every accepted connection gets TCP_NODELAY.

uvicorn's h11 protocol writes a response's head and body in two send()s. Without TCP_NODELAY, Nagle holds
the second back until the first is acknowledged, and the client delays that ACK by up to 40 ms: every small
response on a kept-alive connection then takes ~40 ms (a fresh connection escapes, its first segment is
not held). asyncio sets TCP_NODELAY on accepted sockets only when the listening socket's `proto` is
IPPROTO_TCP, and `socket.create_server` leaves it 0, so we say TCP explicitly.
"""

from __future__ import annotations

import socket


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (0: any free port) whose accepted connections skip Nagle."""
    plain = socket.create_server((host, port), family=_family(host))
    plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets on Linux
    # the same file descriptor, re-wrapped with proto=IPPROTO_TCP: accept() copies proto to each connection,
    # and asyncio's transport then sets TCP_NODELAY on it (asyncio.base_events._set_nodelay)
    return socket.socket(plain.family, plain.type, socket.IPPROTO_TCP, fileno=plain.detach())


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
