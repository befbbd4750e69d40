"""The wire contract shared by cloud and device: protobuf messages, topic map, trust checks.

Nothing here does I/O. The gRPC stubs (`protocols.v1.agent_pb2_grpc`) need grpcio and are imported
only where a gRPC server or client runs. The agent depends on this package and never on `cloud` or `model_compiler`.
"""

from protocols import topics, trust
from protocols.v1 import agent_pb2, messages_pb2

SCHEMA_VERSION = 1

__all__ = ["SCHEMA_VERSION", "agent_pb2", "messages_pb2", "topics", "trust"]
