"""Attack: an online signing key is stolen. The targets key (signs manifests) alone cannot make any
device install anything: every install needs the director's per-device assignment. The director key
alone can only choose among releases the targets key signed (an old release, say), never run a model of
the attacker's. Once the operator revokes the stolen key (`edgefleet keys revoke`; the new root version
reaches devices on the trust topic), what it signs is refused before its expiry. The root key is kept
offline; with it, everything could be re-delegated (README, "Threat model")."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import wait_until
from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.releases import Keys, desired_state, make_keys, make_release, rotate_director

from protocols.topics import Channel, device_topic, trust_topic
from protocols.v1 import messages_pb2 as pb

ACTIVE = pb.UPDATE_STATE_ACTIVE


def _label(agent) -> str:  # type: ignore[no-untyped-def]
    return str(agent.predict([0.9, 0.1, 0.1]).labels[0])


def _codes(cloud: FakeCloud) -> list[str]:
    return [e.error.code for e in cloud.events("dev-1") if e.error.code]


@pytest.fixture
def fleet(tmp_path: Path, keys: Keys) -> Keys:
    """A fleet of this test's own (its keys get revoked), on the shared fleet name."""
    return make_keys(tmp_path / "fleet", fleet=keys.fleet)


@pytest.fixture
def device(fleet: Keys, make_agent: MakeAgent, cloud: FakeCloud):  # type: ignore[no-untyped-def]
    """dev-1 pinned to `fleet`, serving v1 under assignment 1."""
    agent = make_agent(trust_path=fleet.trust_path)
    v1 = make_release(fleet.signer, "v1", 1)
    cloud.artifacts.update(v1.artifacts)
    _publish(cloud, fleet, desired_state("dev-1", v1, 1), retain=True)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    return agent


def _publish(cloud: FakeCloud, fleet: Keys, desired: pb.DesiredState, *, retain: bool = False) -> None:
    cloud.send(device_topic("dev-1", Channel.DESIRED, fleet=fleet.fleet), desired.SerializeToString(), retain=retain)


def _attackers_desired(fleet: Keys, cloud: FakeCloud, tag: str, counter: int, *, director: Ed25519PrivateKey):
    """A desired state for a model of the attacker's (signed with the fleet's own targets key), assigned by
    `director`."""
    release = make_release(fleet.signer, tag, 9)
    cloud.artifacts.update(release.artifacts)
    desired = desired_state("dev-1", release, counter)
    desired.assignment.CopyFrom(fleet.assign("dev-1", counter, release.signed, key=director))
    return desired


@pytest.mark.parametrize("assigned_by", ["targets key", "a key of the attacker's"])
def test_a_stolen_targets_key_alone_installs_nothing(
    assigned_by: str, device, fleet: Keys, cloud: FakeCloud  # type: ignore[no-untyped-def]
) -> None:
    director = fleet.targets if assigned_by == "targets key" else Ed25519PrivateKey.generate()
    _publish(cloud, fleet, _attackers_desired(fleet, cloud, "evil", 2, director=director), retain=True)
    assert wait_until(lambda: "unknown_key" in _codes(cloud), 5), _codes(cloud)
    assert is_state(device.status(), ACTIVE, 1) and _label(device) == "v1:pos"


def test_a_stolen_director_key_cannot_bring_a_model_the_targets_key_never_signed(
    device, fleet: Keys, cloud: FakeCloud, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    foreign = make_release(make_keys(tmp_path / "attacker").signer, "evil", 9)
    cloud.artifacts.update(foreign.artifacts)
    desired = desired_state("dev-1", foreign, 2, keys=fleet)  # assigned with the stolen director key
    _publish(cloud, fleet, desired, retain=True)
    assert wait_until(lambda: "unknown_key" in _codes(cloud), 5), _codes(cloud)
    assert is_state(device.status(), ACTIVE, 1) and _label(device) == "v1:pos"


def test_a_revoked_director_key_is_refused_before_its_expiry_and_its_successor_works(
    device, fleet: Keys, cloud: FakeCloud  # type: ignore[no-untyped-def]
) -> None:
    stolen = fleet.director
    # with both keys the attacker gets a model installed: the limit revocation exists for
    _publish(cloud, fleet, _attackers_desired(fleet, cloud, "evil", 2, director=stolen))
    assert device.wait_for(lambda s: is_state(s, ACTIVE, 2), 5) and _label(device) == "evil:pos"
    # the operator revokes the director key; devices hear of it on the (retained) trust topic
    recovered = rotate_director(fleet, revoke=True)
    cloud.send(trust_topic(fleet.fleet), recovered.chain.SerializeToString(), retain=True)
    later = _attackers_desired(fleet, cloud, "evil2", 3, director=stolen)
    later.ClearField("trust")  # the attacker withholds the new root: the device already has it
    assert wait_until(lambda: _send_and_check(cloud, fleet, later, "revoked"), 5), _codes(cloud)
    assert _label(device) == "evil:pos"  # nothing new installed
    v2 = make_release(recovered.signer, "v2", 2)
    cloud.artifacts.update(v2.artifacts)
    honest = desired_state("dev-1", v2, 4, keys=recovered)
    _publish(cloud, fleet, honest, retain=True)
    assert device.wait_for(lambda s: is_state(s, ACTIVE, 4), 5) and _label(device) == "v2:pos"


def _send_and_check(cloud: FakeCloud, fleet: Keys, desired: pb.DesiredState, code: str) -> bool:
    """The trust topic and the desired state travel separately: resend until the refusal names `code`."""
    if code in _codes(cloud):
        return True
    _publish(cloud, fleet, desired)
    return code in _codes(cloud)
