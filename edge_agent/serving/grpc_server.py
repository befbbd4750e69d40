"""The local inference API: the EdgeInference service of protocols/v1/agent.proto over gRPC.

A batch comes as a row-major float matrix, or as named columns for a model whose manifest names its
columns (edge_agent.serving.columns builds the float batch from them, numpy only).
Status codes: INVALID_ARGUMENT for input of the wrong shape or values (the message says expected vs
got, and names the column), FAILED_PRECONDITION while no model is active, INTERNAL for anything else (logged).

The server is grpclib (pure-Python HTTP/2 on asyncio) on one thread of its own: on the wire it is the same
gRPC that any client speaks (grpcio's included), and it costs a device ~4 MB resident and one thread where
grpcio's server cost ~15 MB and eight (benchmarks/agent.py). Calls run on that thread one at a time, inline:
an answer takes tens of microseconds, less than a hop to a worker thread would.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from edge_agent.agent import Agent
from edge_agent.errors import BadInputError, ConfigError, NoModelError
from edge_agent.serving.columns import STRING, ColumnCodec, missing_refused
from protocols.codes import ErrorCode
from protocols.v1 import agent_pb2

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 10.0
# a status message travels in the HTTP/2 trailers (grpc-message): one naming a caller's 2 MB column, or
# thousands of them, overflowed the header limits and the call hung until its deadline (tests/attacks)
_MAX_MESSAGE_CHARS = 1000


class CallError(Exception):
    """A call's answer is this status: raised by the handlers below, turned into the server's own error."""

    def __init__(self, status: Status, message: str) -> None:
        if len(message) > _MAX_MESSAGE_CHARS:
            message = f"{message[:600]} ...({len(message)} chars)... {message[-300:]}"  # head and tail both say
        super().__init__(message)
        self.status = status
        self.message = message


class ColumnCodecs:
    """The serving model's column codec, read from its manifest once per model (a swap makes a new one)."""

    def __init__(self) -> None:
        self._cached: tuple[Any, ColumnCodec] | None = None

    def of(self, serving: Any) -> ColumnCodec:
        cached = self._cached  # one read: a concurrent call may replace it, never half-way
        if cached is None or cached[0] is not serving:
            cached = self._cached = (serving, ColumnCodec(serving.manifest.io.columns))
        return cached[1]


def predict(agent: Agent, request: agent_pb2.PredictRequest, codecs: ColumnCodecs | None = None,
            ) -> agent_pb2.PredictResponse:  # fmt: skip
    """One Predict call, whatever the server. Raises CallError."""
    serving = agent.serving
    if serving is None:
        raise CallError(Status.FAILED_PRECONDITION, "no model is active on this device yet")
    codecs = codecs or ColumnCodecs()
    x = _named_batch(request, codecs.of(serving)) if request.columns else _matrix_batch(request, serving)
    ids = list(request.prediction_ids) or None
    if ids is not None and len(ids) != len(x):
        raise CallError(Status.INVALID_ARGUMENT, f"{len(ids)} prediction_ids for {len(x)} row(s)")
    inference = _infer(agent, x, request, ids)
    if request.columns and inference.model != serving.ref and _columns_changed(agent, serving):
        # a swap between encoding and inference: the codes were the previous model's, and the new one
        # names other columns or categories: ask it again with its own
        now = agent.serving
        assert now is not None
        inference = _infer(agent, _named_batch(request, codecs.of(now)), request, ids)
    prediction = inference.prediction
    response = agent_pb2.PredictResponse(latency_us=inference.latency_us)
    response.model.CopyFrom(inference.model)
    if prediction.labels is not None:
        response.labels.extend(str(label) for label in prediction.labels)
    if prediction.values is not None:
        response.values.extend(np.asarray(prediction.values, dtype=np.float32).reshape(-1).tolist())
    return response


def _columns_changed(agent: Agent, before: Any) -> bool:
    now = agent.serving
    return now is not None and list(now.manifest.io.columns) != list(before.manifest.io.columns)


def _infer(agent: Agent, x: np.ndarray, request: agent_pb2.PredictRequest, ids: list[str] | None) -> Any:
    try:
        return agent.infer(x, label=request.label or None, prediction_id=ids)
    except NoModelError as exc:
        raise CallError(Status.FAILED_PRECONDITION, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - mapped to a status code, never kills the server
        if getattr(exc, "code", None) == ErrorCode.BAD_INPUT or isinstance(exc, ValueError):
            raise CallError(Status.INVALID_ARGUMENT, str(exc)) from None
        log.exception("Predict failed")
        raise CallError(Status.INTERNAL, f"{type(exc).__name__}: {exc}") from None


def _matrix_batch(request: agent_pb2.PredictRequest, serving: Any) -> np.ndarray:
    rows = request.rows or 1
    n_features = serving.n_features
    if len(request.values) != rows * n_features:
        raise CallError(
            Status.INVALID_ARGUMENT,
            f"expected {rows} row(s) x {n_features} features = {rows * n_features} values, got {len(request.values)}",
        )
    x = np.asarray(request.values, dtype=np.float32).reshape(rows, n_features)
    refused = missing_refused(serving.manifest.io.columns, x)
    if refused is not None:
        raise CallError(Status.INVALID_ARGUMENT, f"column {refused!r}: missing value, which this model does not accept")
    return x


def _named_batch(request: agent_pb2.PredictRequest, codec: ColumnCodec) -> np.ndarray:
    """The float batch from named columns (numpy only), or INVALID_ARGUMENT naming the column."""
    if not codec.columns:
        raise CallError(Status.INVALID_ARGUMENT,
                        "this model's manifest names no input columns: send the batch as values (rows x n_features)")
    specs = {c.name: c for c in codec.columns}
    values: dict[str, Any] = {}
    missing: dict[str, np.ndarray] = {}
    for column in request.columns:
        if column.name in values:
            raise CallError(Status.INVALID_ARGUMENT, f"column {column.name!r} sent twice")
        spec = specs.get(column.name)
        text = spec is not None and spec.dtype == STRING
        if spec is not None and (column.numbers if text else column.strings):
            want = "strings" if text else "numbers"
            raise CallError(Status.INVALID_ARGUMENT, f"column {column.name!r} ({spec.dtype}): send {want}")
        values[column.name] = list(column.strings) if text else np.asarray(column.numbers, dtype=np.float64)
        if column.missing:
            missing[column.name] = np.asarray(column.missing, dtype=bool)
    try:
        return codec.encode(values, missing, rows=request.rows or None)
    except BadInputError as exc:
        raise CallError(Status.INVALID_ARGUMENT, str(exc)) from None


def status(agent: Agent, request: agent_pb2.StatusRequest) -> agent_pb2.StatusResponse:
    """One Status call, whatever the server."""
    inferences, errors = agent.counts
    return agent_pb2.StatusResponse(state=agent.status(), inference_count=inferences, error_count=errors)


class EdgeInferenceService:
    """The service's handlers, one per rpc of the proto (named alike), served by grpclib."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.codecs = ColumnCodecs()

    def __mapping__(self) -> dict[str, Handler]:
        # read from the proto's descriptor, as grpclib's generated code would say it (that module would also
        # import grpclib's client and http: ~0.2 MB an agent does not need)
        service = agent_pb2.DESCRIPTOR.services_by_name["EdgeInference"]
        return {
            f"/{service.full_name}/{method.name}": Handler(
                getattr(self, method.name),
                Cardinality.UNARY_UNARY,
                getattr(agent_pb2, method.input_type.name),
                getattr(agent_pb2, method.output_type.name),
            )
            for method in service.methods
        }

    async def Predict(self, stream: Stream[agent_pb2.PredictRequest, agent_pb2.PredictResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None  # unary: grpclib has read the one message or failed the call
        try:
            response = predict(self.agent, request, self.codecs)
        except CallError as exc:
            raise GRPCError(exc.status, exc.message) from None
        await stream.send_message(response)

    async def Status(self, stream: Stream[agent_pb2.StatusRequest, agent_pb2.StatusResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(status(self.agent, request))


class _Server(Server):
    """grpclib's Server, also closing the connections of local apps at stop (asyncio's server of Python
    3.11 leaves them open, and a connection left open holds its socket until the process ends)."""

    def __init__(self, handlers: list[Any]) -> None:
        super().__init__(handlers)
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def _protocol_factory(self) -> Any:
        protocol = super()._protocol_factory()
        self._connections.add(protocol)
        return protocol

    def drop_connections(self) -> None:
        for protocol in list(self._connections):
            connection = getattr(protocol, "connection", None)  # set once the connection is made
            if connection is not None:
                connection.close()


@dataclass
class GrpcServer:
    """A running server: its port, and stop()."""

    port: int
    _server: _Server
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread

    def stop(self, grace_s: float = 1.0) -> None:
        """Stop listening, give calls under way up to grace_s to finish, then end the thread."""
        if not self._thread.is_alive():
            return

        async def close() -> None:
            self._server.close()  # listens no more; calls under way are cancelled
            try:
                await asyncio.wait_for(self._server.wait_closed(), max(grace_s, 0.01))
            except TimeoutError:
                log.warning("gRPC server: calls still under way after %.1f s, dropped", grace_s)
            self._server.drop_connections()
            await asyncio.sleep(0)  # the transports' closing callbacks run (they close the sockets)

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(grace_s + 5)
        finally:
            _end(self._loop, self._thread)


def _end(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    if not thread.is_alive():
        loop.close()


def _listen(address: str) -> socket.socket:
    """A listening socket on "host:port" (port 0: one the OS picks). No SO_REUSEPORT: with it (grpcio's
    default) a second agent on the same port would bind as well and local apps' calls would land on either
    agent at random; now the second one is refused."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, int(port)), family=family, reuse_port=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"grpc_address: cannot listen on {address} (another agent on this machine? give this one "
                          f"its own: grpc_address in its config, or EDGEFLEET_AGENT_GRPC_ADDRESS): {exc}") from None


def start_grpc_server(agent: Agent, address: str) -> GrpcServer:
    """Serve EdgeInference on address ("host:port"; port 0 picks a free one, see .port) from a thread of its
    own (edgefleet-grpc-{device id}). Raises ConfigError when it cannot listen there."""
    sock = _listen(address)
    port = int(sock.getsockname()[1])
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"edgefleet-grpc-{agent.device_id}", daemon=True)
    thread.start()

    async def start() -> _Server:
        server = _Server([EdgeInferenceService(agent)])  # made on its loop: grpclib binds the running one
        await server.start(sock=sock)
        return server

    try:
        server = asyncio.run_coroutine_threadsafe(start(), loop).result(_START_TIMEOUT_S)
    except BaseException:
        sock.close()
        _end(loop, thread)
        raise
    return GrpcServer(port, server, loop, thread)
