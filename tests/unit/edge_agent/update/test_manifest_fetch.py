"""The manifest wait of `edge_agent.update.manifest_fetch` (pure): which desired states wait, for what,
and what each manifest or timeout gives the machine."""

from __future__ import annotations

from support.releases import FLEET, Keys, desired_state, make_release

from edge_agent.update.manifest_fetch import ManifestFetch, ManifestReceived, received_digest, wanted_manifest
from protocols.assignment import manifest_digest
from protocols.topics import manifest_topic
from protocols.v1 import messages_pb2 as pb


def _small(keys: Keys, tag: str = "v1", counter: int = 1) -> tuple[pb.DesiredState, pb.SignedManifest]:
    release = make_release(keys.signer, tag, counter)
    state = desired_state("dev-1", release, counter, keys=keys)
    state.ClearField("manifest")
    return state, release.signed


def test_only_a_desired_state_without_the_manifest_its_assignment_names_waits(keys: Keys) -> None:
    small, signed = _small(keys)
    assert wanted_manifest(small) == manifest_digest(signed)
    whole = pb.DesiredState()
    whole.CopyFrom(small)
    whole.manifest.CopyFrom(signed)
    assert wanted_manifest(whole) is None  # an older cloud's, or an old agent's fleet: as before
    cleared = pb.DesiredState(assignment=keys.assign("dev-1", 2, None))
    assert wanted_manifest(cleared) is None  # no model assigned: nothing to read
    assert wanted_manifest(pb.DesiredState()) is None  # no assignment: the machine refuses it
    garbage = pb.DesiredState(assignment=pb.SignedAssignment(assignment=b"\xff\xff"))
    assert wanted_manifest(garbage) is None


def test_the_named_manifest_completes_the_held_desired_state_and_others_do_not(keys: Keys) -> None:
    small, signed = _small(keys)
    _other_small, other = _small(keys, "v2", 2)
    fetch = ManifestFetch(FLEET, wait_s=10)
    digest = manifest_digest(signed)
    assert fetch.hold(small, digest, received_digest(small), True, 0.0) == manifest_topic(digest, fleet=FLEET)
    assert fetch.received(ManifestReceived(manifest_digest(other), other)) is None
    event = fetch.received(ManifestReceived(digest, signed))
    assert event is not None and event.desired.manifest == signed
    assert event.received_sha256 == received_digest(small)  # re-deliveries are known by what came
    assert fetch.topic is None and fetch.received(ManifestReceived(digest, signed)) is None  # taken once


def test_a_late_manifest_is_told_once_per_wait_and_the_wait_restarts_on_connect(keys: Keys) -> None:
    small, signed = _small(keys)
    fetch = ManifestFetch(FLEET, wait_s=10)
    fetch.hold(small, manifest_digest(signed), received_digest(small), False, 0.0)
    assert fetch.overdue(100.0) is None  # offline: the wait has not started
    fetch.connected(100.0)
    assert fetch.overdue(109.0) is None
    late = fetch.overdue(110.0)
    assert late is not None and not late.desired.HasField("manifest")  # for the machine to refuse
    assert fetch.overdue(200.0) is None  # once per wait
    assert fetch.received(ManifestReceived(manifest_digest(signed), signed)) is not None  # still taken
    assert fetch.release() is None
