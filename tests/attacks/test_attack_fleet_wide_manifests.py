"""Attack: a client that can publish on the fleet-wide manifest topics (a broker without our ACL: no device
can with it, see test_attack_broker_identities.py) withholds, clears, plants or swaps the manifest a
desired state names by digest, or a stolen director key assigns one no targets key signed. The device must
act on none of them, keep serving its model, say why, and take the genuine manifest when it comes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support import wait_until
from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.releases import FLEET, Keys, desired_state, make_keys, make_release

from protocols.assignment import manifest_digest
from protocols.topics import Channel, device_topic, manifest_topic
from protocols.v1 import messages_pb2 as pb

ACTIVE = pb.UPDATE_STATE_ACTIVE


def _errors(cloud: FakeCloud, code: str) -> list[pb.LifecycleEvent]:
    return [e for e in cloud.events("dev-1") if e.error.code == code]


def _serving_v1(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys, **settings: float) -> Any:
    """An agent serving v1, which every attack here must leave serving."""
    agent = make_agent(**settings)
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    return agent


def _serves_v1(agent: Any) -> bool:
    status = agent.status()
    serving = str(agent.predict([0.9, 0.1, 0.1]).labels[0])
    return bool(status.active_model.version == "v1" and status.update_state == ACTIVE and serving == "v1:pos")


def test_a_manifest_that_does_not_come_is_reported_not_assigned_and_taken_when_it_comes(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = _serving_v1(make_agent, cloud, keys, manifest_timeout_s=0.3)
    v2 = make_release(keys.signer, "v2", 2)
    cloud.deploy("dev-1", v2, generation=2, deployment_id="dep-2", by_digest=True, manifest=b"")

    assert wait_until(lambda: _errors(cloud, "not_assigned"), 5), cloud.event_kinds("dev-1")
    assert _serves_v1(agent)
    cloud.send(manifest_topic(manifest_digest(v2.signed), fleet=FLEET), v2.signed.SerializeToString(), retain=True)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 2) and s.active_model.version == "v2", 5), agent.status()


def test_a_planted_or_swapped_manifest_on_the_topic_is_refused_and_the_genuine_one_taken(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = _serving_v1(make_agent, cloud, keys)
    v2, other = make_release(keys.signer, "v2", 2), make_release(keys.signer, "v3", 3)
    topic = manifest_topic(manifest_digest(v2.signed), fleet=FLEET)
    # a genuinely signed manifest of another release under v2's digest (a swapped digest), then garbage
    cloud.deploy("dev-1", v2, generation=2, deployment_id="dep-2", by_digest=True,
                 manifest=other.signed.SerializeToString())  # fmt: skip
    cloud.send(topic, b"\x0a\x03not a manifest", retain=True)

    assert wait_until(lambda: len(_errors(cloud, "malformed_payload")) >= 1, 5), cloud.event_kinds("dev-1")
    assert _serves_v1(agent)
    cloud.send(topic, v2.signed.SerializeToString(), retain=True)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 2) and s.active_model.version == "v2", 5), agent.status()


def test_a_manifest_no_targets_key_signed_is_refused_though_the_assignment_names_its_digest(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys, tmp_path: Path
) -> None:
    agent = _serving_v1(make_agent, cloud, keys)
    forged = make_release(make_keys(tmp_path / "attacker").signer, "evil", 2)
    state = desired_state("dev-1", forged, 2, "dep-2", keys=keys)  # a director that names it (stolen key)
    cloud.send(manifest_topic(manifest_digest(forged.signed), fleet=FLEET), forged.signed.SerializeToString(),
               retain=True)  # fmt: skip
    state.ClearField("manifest")
    cloud.send(device_topic("dev-1", Channel.DESIRED, fleet=FLEET), state.SerializeToString(), retain=True)

    assert wait_until(lambda: _errors(cloud, "unknown_key"), 5), cloud.event_kinds("dev-1")
    assert _serves_v1(agent)
