"""Serving the active model on the device.

    slot.py          the one model that answers, swapped atomically (ServingModel, ModelSlot)
    runtime.py       the inference interface and its onnxruntime / TFLite adapters (imported lazily)
    selftest.py      a manifest's self-test vectors run against a loaded model
    sampler.py       which inputs and predictions are sent back for drift and retraining
    hints.py         the cloud's sampler hints: the last accepted command kept, a hint read onto the bins
    telemetry.py     the per-window inference counts, latencies and histograms the cloud monitors
    grpc_server.py   the local inference API (gRPC) other programs on the device call

Nothing is imported here, so `import edge_agent.serving.slot` does not pull in a runtime.
"""
