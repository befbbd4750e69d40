"""The wire contract shared by cloud and device: protobuf messages, topic map, chunk layout, error codes,
and both halves of the trust chain (signing and verification).

Nothing here does I/O. The gRPC stubs (`protocols.v1.agent_pb2_grpc`) need grpcio and are imported
only where a gRPC server or client runs. The agent depends on this package and never on `cloud` or
`model_compiler`.

    topics.py     the MQTT topic map and grammar (names, filters, `$share/` subscriptions)
    chunking.py   how an artifact is cut into chunks (layout, chunk i of these bytes)
    codes.py      the error codes that travel on the wire (one StrEnum)
    trust.py      verification: what a device checks before it acts (manifests, artifact bytes, signatures)
    roots.py      the root of trust: versioned root metadata naming which keys hold which role
    assignment.py the director's signed per-device assignment, and checking a whole desired state
    signing.py    the pure half of signing (keys in memory, no files): what the cloud and test kits sign with
    capabilities.py protocol additions an agent reports it understands (the cloud uses them only then)
    commands.py   signed commands to one device on its `cmd` channel (a sampler hint), checked as assignments are
    sequential.py the sequential test of a bad-outcome rate the cloud's gates and the agent's probation share
"""

import importlib
from typing import Any

SCHEMA_VERSION = 1

# Submodules load on first use (PEP 562), so that a device importing only the topic map or the messages does
# not pay for cryptography (~10 MB resident) until it checks a signature.
_SUBMODULES = {
    "capabilities": "protocols.capabilities",
    "chunking": "protocols.chunking",
    "codes": "protocols.codes",
    "commands": "protocols.commands",
    "signing": "protocols.signing",
    "topics": "protocols.topics",
    "trust": "protocols.trust",
    "agent_pb2": "protocols.v1.agent_pb2",
    "messages_pb2": "protocols.v1.messages_pb2",
}

__all__ = [
    "SCHEMA_VERSION", "agent_pb2", "capabilities", "chunking", "codes", "commands", "messages_pb2", "signing",
    "topics", "trust",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _SUBMODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'protocols' has no attribute {name!r}")
    return importlib.import_module(module)
