"""The local inference API: the EdgeInference service of protocols/v1/agent.proto over gRPC.

Status codes: INVALID_ARGUMENT for input of the wrong shape or values (the message says expected vs
got), FAILED_PRECONDITION while no model is active, INTERNAL for anything else (logged).
"""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from edge_agent.agent import Agent
from edge_agent.errors import ConfigError, NoModelError
from protocols.codes import ErrorCode
from protocols.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)


class EdgeInferenceService(agent_pb2_grpc.EdgeInferenceServicer):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def Predict(self, request: agent_pb2.PredictRequest, context: grpc.ServicerContext) -> agent_pb2.PredictResponse:
        serving = self.agent.serving
        if serving is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no model is active on this device yet")
        assert serving is not None
        rows = request.rows or 1
        n_features = serving.n_features
        if len(request.values) != rows * n_features:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"expected {rows} row(s) x {n_features} features = {rows * n_features} values, "
                f"got {len(request.values)}",
            )
        ids = list(request.prediction_ids) or None
        if ids is not None and len(ids) != rows:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{len(ids)} prediction_ids for {rows} row(s)")
        x = np.asarray(request.values, dtype=np.float32).reshape(rows, n_features)
        try:
            inference = self.agent.infer(x, label=request.label or None, prediction_id=ids)
        except NoModelError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except Exception as exc:  # noqa: BLE001 - mapped to a status code, never kills the server
            if getattr(exc, "code", None) == ErrorCode.BAD_INPUT or isinstance(exc, ValueError):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            log.exception("Predict failed")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        prediction = inference.prediction
        response = agent_pb2.PredictResponse(latency_us=inference.latency_us)
        response.model.CopyFrom(inference.model)
        if prediction.labels is not None:
            response.labels.extend(str(label) for label in prediction.labels)
        if prediction.values is not None:
            response.values.extend(np.asarray(prediction.values, dtype=np.float32).reshape(-1).tolist())
        return response

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
