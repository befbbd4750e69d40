"""Attack: an MQTT client that can publish on a device's desired-state topic (no keys) tries to stop it
from updating, to make it install something it was not assigned, or to feed it another device's or an
old assignment. Every refusal must change nothing on the device (no journal write, no counter) and the
next honest assignment must install as if nothing had happened."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import wait_until
from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.releases import Keys, desired_state, make_keys, make_release, model_bytes

from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

ACTIVE = pb.UPDATE_STATE_ACTIVE


def _label(agent) -> str:  # type: ignore[no-untyped-def]
    return str(agent.predict([0.9, 0.1, 0.1]).labels[0])


def _codes(cloud: FakeCloud, device_id: str = "dev-1") -> list[str]:
    return [e.error.code for e in cloud.events(device_id) if e.error.code]


def _bad_signature(keys: Keys, _tmp: Path) -> object:
    release = make_release(keys.signer, "v2", 2)
    release.signed.signature = bytes(64)
    return release


def _unknown_key(keys: Keys, tmp: Path) -> object:
    return make_release(make_keys(tmp / "other-keys").signer, "v2", 2)


# signed metadata the device must refuse, with the counter the attacker puts on it
METADATA_REFUSALS = {
    "bad_signature": (_bad_signature, 2**63),  # once, this froze a device for good
    "unknown_key": (_unknown_key, 2),
    "expired": (lambda keys, _: make_release(keys.signer, "v2", 2, expires_at_ms=1000), 2),
    "replay": (lambda keys, _: make_release(keys.signer, "v0", 1, data=model_bytes("v0")), 0),
}


@pytest.fixture
def serving_v1(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys, tmp_path: Path):  # type: ignore[no-untyped-def]
    """dev-1 serving v1 (assignment 1), and its journal's bytes at that point."""
    agent = make_agent()
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    journal = tmp_path / "state" / "dev-1" / "journal.json"
    return agent, journal, journal.read_bytes()


def _unchanged(agent, journal: Path, before: bytes) -> bool:  # type: ignore[no-untyped-def]
    state = agent.status()
    return is_state(state, ACTIVE, 1) and not state.last_error.code and _label(agent) == "v1:pos" and (
        journal.read_bytes() == before
    )


@pytest.mark.parametrize("code", sorted(METADATA_REFUSALS))
def test_refused_metadata_changes_nothing_on_the_device(
    code: str, serving_v1, cloud: FakeCloud, keys: Keys, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    agent, journal, before = serving_v1
    make, counter = METADATA_REFUSALS[code]
    cloud.deploy("dev-1", make(keys, tmp_path), generation=counter, deployment_id="dep-evil")
    assert wait_until(lambda: code in _codes(cloud), 5)
    refusal = [e for e in cloud.events("dev-1") if e.error.code == code][0]
    assert refusal.kind == pb.EVENT_KIND_VERIFICATION_FAILED and refusal.deployment_id == ""  # unsigned: not repeated
    assert _unchanged(agent, journal, before)
    cloud.deploy("dev-1", make_release(keys.signer, "v2", 2), generation=2)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 2), 5)


def test_a_forged_huge_counter_does_not_freeze_the_device_across_a_restart(
    serving_v1, make_agent: MakeAgent, cloud: FakeCloud, keys: Keys  # type: ignore[no-untyped-def]
) -> None:
    """The original finding: garbage signatures with counter 2**63, retained, then the agent restarts."""
    agent, journal, before = serving_v1
    forged = desired_state("dev-1", make_release(keys.signer, "v9", 2), 2**63 - 1)
    forged.assignment.signature = bytes(64)
    forged.manifest.signature = bytes(64)
    cloud.send(device_topic("dev-1", Channel.DESIRED, fleet=keys.fleet), forged.SerializeToString(), retain=True)
    assert wait_until(lambda: "bad_signature" in _codes(cloud), 5)
    assert _unchanged(agent, journal, before)
    agent.stop()
    again = make_agent()  # finds the forged desired state retained, refuses it again, serves v1
    assert _label(again) == "v1:pos"
    cloud.deploy("dev-1", make_release(keys.signer, "v2", 2), generation=2)
    assert again.wait_for(lambda s: is_state(s, ACTIVE, 2), 5) and _label(again) == "v2:pos"


def test_another_devices_assignment_readdressed_is_refused(
    serving_v1, cloud: FakeCloud, keys: Keys  # type: ignore[no-untyped-def]
) -> None:
    agent, journal, before = serving_v1
    release = make_release(keys.signer, "v2", 2)
    theirs = desired_state("dev-2", release, 5)
    theirs.device_id = "dev-1"  # the unsigned wrapper says dev-1; the signed assignment still says dev-2
    cloud.artifacts.update(release.artifacts)
    cloud.send(device_topic("dev-1", Channel.DESIRED, fleet=keys.fleet), theirs.SerializeToString(), retain=True)
    assert wait_until(lambda: "wrong_device" in _codes(cloud), 5)
    assert _unchanged(agent, journal, before)


def test_a_signed_manifest_that_was_never_assigned_is_refused(
    serving_v1, cloud: FakeCloud, keys: Keys  # type: ignore[no-untyped-def]
) -> None:
    """An old, validly signed manifest of another model swapped into an honest desired state."""
    agent, journal, before = serving_v1
    assigned, other = make_release(keys.signer, "v2", 2), make_release(keys.signer, "other", 7)
    swapped = desired_state("dev-1", assigned, 2)
    swapped.manifest.CopyFrom(other.signed)
    cloud.artifacts.update(other.artifacts)
    cloud.send(device_topic("dev-1", Channel.DESIRED, fleet=keys.fleet), swapped.SerializeToString(), retain=True)
    assert wait_until(lambda: "not_assigned" in _codes(cloud), 5)
    assert _unchanged(agent, journal, before)
    cloud.deploy("dev-1", assigned, generation=3)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 3), 5) and _label(agent) == "v2:pos"


def test_an_operator_rollback_is_accepted_where_the_attackers_replay_is_not(
    serving_v1, cloud: FakeCloud, keys: Keys  # type: ignore[no-untyped-def]
) -> None:
    agent, _journal, _before = serving_v1
    v1, v2 = make_release(keys.signer, "v1", 1), make_release(keys.signer, "v2", 2)
    cloud.deploy("dev-1", v2, generation=2)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 2), 5)
    cloud.deploy("dev-1", v1, generation=1)  # the attacker replays the retained assignment of v1
    assert wait_until(lambda: "replay" in _codes(cloud), 5)
    assert _label(agent) == "v2:pos"
    cloud.deploy("dev-1", v1, generation=3)  # the operator rolls back: a new assignment of the old release
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 3), 5) and _label(agent) == "v1:pos"
