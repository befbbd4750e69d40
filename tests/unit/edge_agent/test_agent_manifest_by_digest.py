"""The agent reads the manifest its assignment names from the fleet-wide topic when the desired state
leaves it out (`edge_agent.update.manifest_fetch`), over an in-memory broker: it says it can, activates,
and needs no manifest for the desired state it verified. The refusals are in
tests/attacks/test_attack_fleet_wide_manifests.py."""

from __future__ import annotations

import time

from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.releases import FLEET, Keys, make_release, model_bytes

from protocols.assignment import manifest_digest
from protocols.capabilities import MANIFEST_BY_DIGEST
from protocols.topics import Channel, manifest_topic
from protocols.v1 import messages_pb2 as pb

ACTIVE = pb.UPDATE_STATE_ACTIVE


def _errors(cloud: FakeCloud, code: str) -> list[pb.LifecycleEvent]:
    return [e for e in cloud.events("dev-1") if e.error.code == code]


def test_the_agent_reports_it_reads_manifests_by_digest_and_activates_without_one_in_its_desired_state(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent()
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=100))
    cloud.deploy("dev-1", release, generation=1, by_digest=True)

    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5), agent.status()  # old agent: not_assigned
    assert str(agent.predict([0.9, 0.1, 0.1]).labels[0]) == "v1:pos"
    retained = pb.DesiredState.FromString(cloud.retained("dev-1", Channel.DESIRED) or b"")
    assert not retained.HasField("manifest")  # what the agent was sent really lacked it
    reported = pb.ReportedState.FromString(cloud.retained("dev-1", Channel.REPORTED) or b"")
    assert MANIFEST_BY_DIGEST in reported.capabilities


def test_a_restart_needs_no_manifest_for_the_desired_state_it_already_verified(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent()
    release = make_release(keys.signer, "v1", 1)
    cloud.deploy("dev-1", release, generation=1, by_digest=True)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    agent.stop()
    cloud.send(manifest_topic(manifest_digest(release.signed), fleet=FLEET), b"", retain=True)  # cleared meanwhile

    again = make_agent()
    assert again.wait_for(lambda s: is_state(s, ACTIVE, 1) and s.active_model.version == "v1", 5)
    time.sleep(0.5)  # the retained desired state is handled by now
    assert again.status().update_state == ACTIVE and not again.status().HasField("last_error")
    assert not _errors(cloud, "not_assigned")
