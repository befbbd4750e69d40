"""The cloud's sampler hints end to end on a real broker: the cloud's SamplerHinter signs a hint, the real
agent (real ONNX model, paho over Mosquitto) takes it, and the rows it samples afterwards favour the
hinted bin: the share measured without and with the hint, on the same traffic. Then an oversize hint
(10^6 bins) and a replayed one travel the real broker too: refused with their codes, the agent serving on."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import wait_until
from support.fake_cloud import CHUNK_REQUESTS, FakeCloud
from support.releases import make_keys, onnx_release

from cloud.monitoring.hints import SamplerHinter
from cloud.rollout.director import Director
from edge_agent.agent import Agent
from edge_agent.config import load_settings
from edge_agent.connect import transport_for
from protocols.commands import sign_command
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration

DEVICE = "pi-hint"
ROWS = 4_000  # per phase, in calls of 10 rows


def _sampled(watched: Any, topic: str, seen: int) -> list[pb.Sample]:
    assert wait_until(lambda: len(watched.payloads(topic)) > seen, 10)
    return list(pb.SampleBatch.FromString(watched.payloads(topic)[-1]).samples)


def _serve(agent: Agent, rng: np.random.Generator) -> None:
    for _ in range(ROWS // 10):
        agent.predict(rng.uniform(size=(10, 3)).astype(np.float32))  # the reference's distribution: no own flags
    assert agent.flush_telemetry() is not None


def test_after_a_hint_the_sampled_rows_favour_the_hinted_bin(
    tmp_path: Path, mqtt_broker: Any, make_transport: Any
) -> None:
    keys = make_keys(tmp_path / "keys")
    release = onnx_release(keys.signer, "1", 1)
    cloud_transport, _ = make_transport()
    cloud = FakeCloud(cloud_transport, chunk_size=1024, topic_filter=CHUNK_REQUESTS, start=False)
    _watcher, watched = make_transport(f"ef/v1/{keys.fleet}/dev/{DEVICE}/#")
    cloud.deploy(DEVICE, release, generation=1)
    settings = load_settings(
        device_id=DEVICE, mqtt_url=mqtt_broker.url, mqtt_protocol=mqtt_broker.mqtt_protocol,
        trust_path=keys.trust_path, state_dir=tmp_path / "state", grpc_address="", telemetry_interval_s=3600.0,
        telemetry_first_window_rows=0, sample_rate=0.05, sample_max_per_window=100_000,
        sample_bytes_per_day=10**9, sample_favour=4.0, sample_low_confidence=0.0,
    )  # fmt: skip
    agent = Agent(settings, transport_for(settings, reconnect_min_s=0.1, reconnect_max_s=1.0), rng=random.Random(0))
    agent.start()
    samples_topic = device_topic(DEVICE, Channel.SAMPLES, fleet=keys.fleet)
    events_topic = device_topic(DEVICE, Channel.EVENTS, fleet=keys.fleet)
    rng = np.random.default_rng(0)
    try:
        assert agent.wait_for(lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE, 30), agent.status()
        _serve(agent, rng)
        without = _sampled(watched, samples_topic, 0)

        director = Director(keys.fleet, keys.director, keys.chain)
        hinter = SamplerHinter(cloud_transport, lambda: director, ttl_s=600)
        lr = pb.ModelRef(model_id="lr", version="1")
        assert hinter.update({DEVICE: (lr, ((1, 3),))}) == [DEVICE]  # feature 1's top bin, [0.75, 1]
        assert wait_until(lambda: agent._sampler.hinted_bins == 1, 10)
        _serve(agent, rng)
        hinted = _sampled(watched, samples_topic, 1)

        share = {name: sum(s.input[1] >= 0.75 for s in rows) / len(rows)
                 for name, rows in (("without", without), ("with", hinted))}  # fmt: skip
        print(f"share of sampled rows in the hinted bin: {share} (n = {len(without)}, {len(hinted)})")
        assert 0.17 <= share["without"] <= 0.33  # a quarter of the rows
        assert share["with"] >= 0.45  # 4 x .25 / (4 x .25 + .75) = 0.57
        odds = {round(s.inclusion_probability, 6) for s in hinted if s.input[1] >= 0.75}
        assert odds == {0.2} and {round(s.inclusion_probability, 6) for s in hinted if s.input[1] < 0.75} == {0.05}

        # an oversize hint (10^6 bins, genuinely signed) and a replay of the first hint after a newer clear
        now = int(time.time() * 1000)
        huge = pb.Command(fleet=keys.fleet, device_id=DEVICE, counter=now + 10**6, issued_at_ms=now,
                          expires_at_ms=now + 60_000, sampler_hint=pb.SamplerHint(model=lr))  # fmt: skip
        huge.sampler_hint.features.extend(range(10**6))
        huge.sampler_hint.bins.extend([0] * 10**6)
        first = hinter.command(DEVICE, lr, ((1, 3),), now)
        cmd = device_topic(DEVICE, Channel.COMMAND, fleet=keys.fleet)
        cloud_transport.publish(cmd, sign_command(keys.director, huge).SerializeToString(), qos=1)
        assert hinter.update({}) == [DEVICE]  # the alert cleared: an empty hint
        assert wait_until(lambda: agent._sampler.hinted_bins == 0, 10)
        cloud_transport.publish(cmd, first.SerializeToString(), qos=1)

        def codes() -> set[str]:
            return {pb.LifecycleEvent.FromString(p).error.code for p in watched.payloads(events_topic)}

        assert wait_until(lambda: {"too_large", "replay"} <= codes(), 10), codes()
        assert agent._sampler.hinted_bins == 0
        assert agent.predict(np.full((1, 3), 0.9, dtype=np.float32)).labels == ["1"]  # serving on
    finally:
        agent.stop()
