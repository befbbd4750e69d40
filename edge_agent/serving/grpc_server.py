"""The local inference API: the EdgeInference service of protocols/v1/agent.proto over gRPC.

A batch comes as a row-major float matrix, or as named columns for a model whose manifest names its
columns (edge_agent.serving.columns builds the float batch from them, numpy only).
Status codes: INVALID_ARGUMENT for input of the wrong shape or values (the message says expected vs
got, and names the column), FAILED_PRECONDITION while no model is active, INTERNAL for anything else (logged).
"""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from edge_agent.agent import Agent
from edge_agent.errors import BadInputError, ConfigError, NoModelError
from edge_agent.serving.columns import STRING, ColumnCodec, missing_refused
from protocols.codes import ErrorCode
from protocols.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)


class EdgeInferenceService(agent_pb2_grpc.EdgeInferenceServicer):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._codec: tuple[Any, ColumnCodec] | None = None  # (serving model, its columns read once)

    def Predict(self, request: agent_pb2.PredictRequest, context: grpc.ServicerContext) -> agent_pb2.PredictResponse:
        serving = self.agent.serving
        if serving is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no model is active on this device yet")
        assert serving is not None
        if request.columns:
            x = self._named_batch(request, self._codec_of(serving), context)
        else:
            x = self._matrix_batch(request, serving, context)
        inference = self._infer(x, request, context)
        if request.columns and inference.model != serving.ref and self._columns_changed(serving):
            # a swap between encoding and inference: the codes were the previous model's, and the new one
            # names other columns or categories: ask it again with its own
            now = self.agent.serving
            assert now is not None
            inference = self._infer(self._named_batch(request, self._codec_of(now), context), request, context)
        prediction = inference.prediction
        response = agent_pb2.PredictResponse(latency_us=inference.latency_us)
        response.model.CopyFrom(inference.model)
        if prediction.labels is not None:
            response.labels.extend(str(label) for label in prediction.labels)
        if prediction.values is not None:
            response.values.extend(np.asarray(prediction.values, dtype=np.float32).reshape(-1).tolist())
        return response

    def _columns_changed(self, before: Any) -> bool:
        now = self.agent.serving
        return now is not None and list(now.manifest.io.columns) != list(before.manifest.io.columns)

    def _infer(self, x: np.ndarray, request: agent_pb2.PredictRequest, context: grpc.ServicerContext) -> Any:
        try:
            return self.agent.infer(x, label=request.label or None)
        except NoModelError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except Exception as exc:  # noqa: BLE001 - mapped to a status code, never kills the server
            if getattr(exc, "code", None) == ErrorCode.BAD_INPUT or isinstance(exc, ValueError):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            log.exception("Predict failed")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        raise AssertionError("unreachable")  # context.abort raises

    @staticmethod
    def _matrix_batch(request: agent_pb2.PredictRequest, serving: Any, context: grpc.ServicerContext) -> np.ndarray:
        rows = request.rows or 1
        n_features = serving.n_features
        if len(request.values) != rows * n_features:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"expected {rows} row(s) x {n_features} features = {rows * n_features} values, "
                f"got {len(request.values)}",
            )
        x = np.asarray(request.values, dtype=np.float32).reshape(rows, n_features)
        refused = missing_refused(serving.manifest.io.columns, x)
        if refused is not None:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"column {refused!r}: missing value, which this model does not accept"
            )
        return x

    def _codec_of(self, serving: Any) -> ColumnCodec:
        cached = self._codec  # one read: a concurrent call may replace it, never half-way
        if cached is None or cached[0] is not serving:
            cached = self._codec = (serving, ColumnCodec(serving.manifest.io.columns))
        return cached[1]

    @staticmethod
    def _named_batch(
        request: agent_pb2.PredictRequest, codec: ColumnCodec, context: grpc.ServicerContext
    ) -> np.ndarray:
        """The float batch from named columns (numpy only), or INVALID_ARGUMENT naming the column."""
        if not codec.columns:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "this model's manifest names no input columns: send the batch as values (rows x n_features)",
            )
        specs = {c.name: c for c in codec.columns}
        values: dict[str, Any] = {}
        missing: dict[str, np.ndarray] = {}
        for column in request.columns:
            if column.name in values:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"column {column.name!r} sent twice")
            spec = specs.get(column.name)
            text = spec is not None and spec.dtype == STRING
            if spec is not None and (column.numbers if text else column.strings):
                want = "strings" if text else "numbers"
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"column {column.name!r} ({spec.dtype}): send {want}")
            values[column.name] = list(column.strings) if text else np.asarray(column.numbers, dtype=np.float64)
            if column.missing:
                missing[column.name] = np.asarray(column.missing, dtype=bool)
        try:
            return codec.encode(values, missing, rows=request.rows or None)
        except BadInputError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise AssertionError("unreachable")  # context.abort raises

    def Status(self, request: agent_pb2.StatusRequest, context: grpc.ServicerContext) -> agent_pb2.StatusResponse:
        inferences, errors = self.agent.counts
        return agent_pb2.StatusResponse(state=self.agent.status(), inference_count=inferences, error_count=errors)


@dataclass
class GrpcServer:
    server: Any  # grpc.Server
    port: int

    def stop(self, grace_s: float = 1.0) -> None:
        self.server.stop(grace_s).wait(grace_s + 1)


def start_grpc_server(agent: Agent, address: str, *, max_workers: int = 4) -> GrpcServer:
    """Serve EdgeInference on address ("host:port"; port 0 picks a free one, see .port).

    SO_REUSEPORT is off: gRPC turns it on by default, so a second agent on the same port would bind as well
    and local apps' calls would land on either agent at random; now the second one is refused."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"edgefleet-grpc-{agent.device_id}"),
        options=[("grpc.so_reuseport", 0)],
    )
    agent_pb2_grpc.add_EdgeInferenceServicer_to_server(EdgeInferenceService(agent), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"grpc_address: cannot listen on {address} (is another agent using it?): {exc}") from None
    if port == 0:
        raise ConfigError(f"grpc_address: cannot listen on {address} (is another agent using it?)")
    server.start()
    return GrpcServer(server, port)
