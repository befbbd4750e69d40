"""The local inference API over real gRPC (in-process server on a port the OS picks)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.releases import Keys, make_release

from edge_agent.agent import Agent
from edge_agent.errors import ConfigError
from edge_agent.serving.grpc_server import start_grpc_server
from protocols.topics import Channel
from protocols.v1 import agent_pb2, agent_pb2_grpc
from protocols.v1 import messages_pb2 as pb


@pytest.fixture
def serve() -> Iterator:  # type: ignore[type-arg]
    servers, channels = [], []

    def start(agent: Agent) -> agent_pb2_grpc.EdgeInferenceStub:
        server = start_grpc_server(agent, "127.0.0.1:0")
        servers.append(server)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        channels.append(channel)
        return agent_pb2_grpc.EdgeInferenceStub(channel)

    yield start
    for channel in channels:
        channel.close()
    for server in servers:
        server.stop(0)


def test_predict_and_status(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys, serve) -> None:  # type: ignore[no-untyped-def]
    agent = make_agent()
    stub = serve(agent)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(agent_pb2.PredictRequest(values=[0.9, 0.1, 0.1]), timeout=5)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, pb.UPDATE_STATE_ACTIVE, 1), 5)
    reply = stub.Predict(agent_pb2.PredictRequest(values=[0.9, 0.1, 0.1, 0.1, 0.1, 0.1], rows=2), timeout=5)
    assert list(reply.labels) == ["v1:pos", "v1:neg"]
    assert reply.model.version == "v1" and reply.latency_us > 0
    labelled = stub.Predict(agent_pb2.PredictRequest(values=[0.9, 0.1, 0.1], label="v1:pos"), timeout=5)
    assert list(labelled.labels) == ["v1:pos"]

    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(agent_pb2.PredictRequest(values=[1.0, 2.0], rows=1), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected 1 row(s) x 3 features = 3 values, got 2" in str(info.value.details())
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(agent_pb2.PredictRequest(values=[float("nan"), 0.0, 0.0]), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    status = stub.Status(agent_pb2.StatusRequest(), timeout=5)
    assert status.state.update_state == pb.UPDATE_STATE_ACTIVE
    assert status.state.active_model.version == "v1"
    # the refused inputs were the caller's mistakes: they are not the model's errors (which gates and the
    # probation health check judge)
    assert (status.inference_count, status.error_count) == (3, 0)
    window = agent.flush_telemetry()
    assert window is not None and (window.labelled_count, window.correct_count) == (1, 1)


def test_prediction_ids_travel_with_sampled_rows(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys, serve) -> None:  # type: ignore[no-untyped-def]
    agent = make_agent(sample_rate=1.0, sample_max_per_window=10)
    stub = serve(agent)
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, pb.UPDATE_STATE_ACTIVE, 1), 5)
    request = agent_pb2.PredictRequest(values=[0.9, 0.1, 0.1, 0.1, 0.1, 0.1], rows=2, prediction_ids=["a-1", "a-2"])
    assert list(stub.Predict(request, timeout=5).labels) == ["v1:pos", "v1:neg"]
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(agent_pb2.PredictRequest(values=[0.9, 0.1, 0.1], prediction_ids=["x", "y"]), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "2 prediction_ids for 1 row(s)" in str(
        info.value.details()
    )
    agent.flush_telemetry()
    (batch,) = [pb.SampleBatch.FromString(p) for p in cloud.payloads("dev-1", Channel.SAMPLES)]
    assert [s.prediction_id for s in batch.samples] == ["a-1", "a-2"]
    assert all(s.inclusion_probability == 1.0 for s in batch.samples)


def test_a_second_agent_cannot_share_the_port(make_agent: MakeAgent) -> None:
    """gRPC binds with SO_REUSEPORT by default: two agents on one port would split local apps' calls at
    random between them. The second must be refused, the first keep serving."""
    first = start_grpc_server(make_agent("pi-01"), "127.0.0.1:0")
    try:
        with pytest.raises(ConfigError, match="another agent.*EDGEFLEET_AGENT_GRPC_ADDRESS"):
            start_grpc_server(make_agent("pi-02"), f"127.0.0.1:{first.port}")
        with grpc.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            status = agent_pb2_grpc.EdgeInferenceStub(channel).Status(agent_pb2.StatusRequest(), timeout=5)
        assert status.state.device_id == "pi-01"
    finally:
        first.stop(0)


def test_named_columns_to_a_model_without_named_columns_are_refused(  # type: ignore[no-untyped-def]
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys, serve
) -> None:
    agent = make_agent()
    stub = serve(agent)
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, pb.UPDATE_STATE_ACTIVE, 1), 5)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(agent_pb2.PredictRequest(columns=[agent_pb2.Column(name="f0", numbers=[1.0])]), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "names no input columns: send the batch as values" in str(info.value.details())
    reply = stub.Predict(agent_pb2.PredictRequest(values=[0.9, 0.1, 0.1]), timeout=5)  # the matrix form still works
    assert list(reply.labels) == ["v1:pos"]
