"""EdgeFleet device agent. Depends on `protocols` only, never on `cloud` or `model_compiler`.

The public surface is re-exported here lazily (PEP 562), so that `import edge_agent.transport` stays
light and onnxruntime is imported only by code that runs a model.

    cli.py        the device's own command, `edgefleet-agent` (also `edgefleet agent`)
    agent.py      wiring and the public API; runner.py runs its steps (own threads, or a shared event
                  loop in the simulator); executor.py turns update actions into I/O;
                  outbox.py publishes; downlink.py parses what the cloud sends
    update/       the update path: a pure state machine with one transition table, and its journal
    serving/      the model slot, runtimes, self-test, sampling, telemetry, the local gRPC API
    transport.py paho_transport.py broker_url.py connect.py   the MQTT port and its adapters
    store.py config.py errors.py messages.py clock.py types.py resources.py
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Agent": "edge_agent.agent",
    "Inference": "edge_agent.agent",
    "AgentSettings": "edge_agent.config",
    "load_settings": "edge_agent.config",
    "AgentError": "edge_agent.errors",
    "BadInputError": "edge_agent.errors",
    "ConfigError": "edge_agent.errors",
    "NoModelError": "edge_agent.errors",
    "StoreError": "edge_agent.errors",
    "DiskModelStore": "edge_agent.store",
    "MemoryModelStore": "edge_agent.store",
    "ModelStore": "edge_agent.store",
    "AgentRunner": "edge_agent.runner",
    "LoopRunner": "edge_agent.runner",
    "ThreadRunner": "edge_agent.runner",
    "FactsSource": "edge_agent.facts",
    "Clock": "edge_agent.clock",
    "ManualClock": "edge_agent.clock",
    "SystemClock": "edge_agent.clock",
    "offline_will": "edge_agent.messages",
    "start_grpc_server": "edge_agent.serving.grpc_server",
    "State": "edge_agent.update.states",
    "Updater": "edge_agent.update.machine",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_agent' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
