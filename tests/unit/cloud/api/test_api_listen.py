"""The console API's listening socket: every connection it accepts gets TCP_NODELAY from asyncio, so a
response written in two send()s is not held back by Nagle waiting for a delayed ACK (~40 ms each)."""

from __future__ import annotations

import asyncio
import socket

from cloud.api.listen import listen_socket


def _nodelay_of_accepted(sock: socket.socket) -> int:
    async def accept_one() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        with socket.create_connection(sock.getsockname()[:2]):
            result = await asyncio.wait_for(accepted, 10)
        server.close()
        return result

    return asyncio.run(accept_one())


def test_connections_accepted_on_the_api_socket_have_tcp_nodelay() -> None:
    assert _nodelay_of_accepted(listen_socket("127.0.0.1", 0)) != 0


def test_a_plain_create_server_socket_does_not_which_is_why_listen_socket_exists() -> None:
    # pins the cause: if asyncio ever sets TCP_NODELAY here too, cloud.api.listen can go
    assert _nodelay_of_accepted(socket.create_server(("127.0.0.1", 0))) == 0
