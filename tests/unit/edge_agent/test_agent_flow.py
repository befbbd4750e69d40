"""The agent end to end over an in-memory broker: updates, restarts, refusals, duplicates, resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.releases import Keys, desired_state, make_keys, make_release, model_bytes, rotate_director

from edge_agent.clock import ManualClock
from edge_agent.store import DiskModelStore
from protocols.topics import Channel, device_topic, trust_topic
from protocols.v1 import messages_pb2 as pb

ACTIVE, FAILED, IDLE = pb.UPDATE_STATE_ACTIVE, pb.UPDATE_STATE_FAILED, pb.UPDATE_STATE_IDLE
POS = [0.9, 0.1, 0.1]


def _label(agent, x=POS) -> str:  # type: ignore[no-untyped-def]
    return str(agent.predict(x).labels[0])


def _active_tag(agent) -> str:  # type: ignore[no-untyped-def]
    return str(agent.status().active_model.version)


def test_happy_path_downloads_verifies_and_activates(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys) -> None:
    agent = make_agent()
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=100))
    cloud.deploy("dev-1", release, generation=1)

    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5), agent.status()
    assert _label(agent) == "v1:pos"
    state = agent.status()
    assert (state.active_model.model_id, state.active_model.sequence) == ("demo", 1)
    assert state.active_model.artifact_sha256 == release.sha256
    assert state.deployment_id == "dep-1" and not state.HasField("last_error")
    assert list(state.runtimes) == ["onnxruntime"]
    assert cloud.event_kinds("dev-1") == [
        "STARTED",
        "UPDATE_STARTED",
        "DOWNLOADED",
        "VERIFIED",
        "SELF_TEST_PASSED",
        "ACTIVATED",
    ]
    assert len(set(cloud.chunks_requested())) == cloud.location(release.sha256).total_chunks
    reported = pb.ReportedState.FromString(cloud.retained("dev-1", Channel.REPORTED) or b"")
    assert reported.update_state == ACTIVE and reported.active_model.version == "v1"
    seqs = [pb.ReportedState.FromString(p).seq for p in cloud.payloads("dev-1", Channel.REPORTED)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert pb.Presence.FromString(cloud.retained("dev-1", Channel.PRESENCE) or b"").online


def test_with_fanout_the_agent_asks_only_for_the_chunk_that_did_not_come(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent(chunk_timeout_s=0.5)
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=100))
    cloud.deploy("dev-1", release, generation=1, fanout=True, withhold=frozenset({2}))
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5), agent.status()
    assert cloud.chunks_requested() == [2]  # every other chunk came from the fleet-wide topics


def test_a_restart_serves_the_model_at_once_and_fetches_nothing(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent()
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    agent.stop()
    assert not pb.Presence.FromString(cloud.retained("dev-1", Channel.PRESENCE) or b"").online
    requested = len(cloud.requests)

    again = make_agent()
    assert _label(again) == "v1:pos"  # right after start(), before any message was handled
    assert again.wait_for(lambda s: is_state(s, ACTIVE, 1) and s.active_model.version == "v1", 5)
    assert len(cloud.requests) == requested
    started = [e for e in cloud.events("dev-1") if e.kind == pb.EVENT_KIND_STARTED]
    assert started[-1].model.version == "v1"
    assert started[-1].seq > started[0].seq  # seq keeps increasing across restarts


# an update that verifies but cannot be installed fails and says why; the previous model keeps serving
REFUSALS = {
    "size_mismatch": (lambda keys, _: make_release(keys.signer, "v2", 2, size_bytes=7), "VERIFICATION_FAILED"),
    "self_test_failed": (lambda keys, _: make_release(keys.signer, "v2", 2, wrong_self_test=True), "SELF_TEST_FAILED"),
    "no_compatible_artifact": (lambda keys, _: make_release(keys.signer, "v2", 2, runtime="tflite"), "ERROR"),
    "load_failed": (
        lambda keys, _: make_release(keys.signer, "v2", 2, data=model_bytes("v2", broken=True)),
        "ERROR",
    ),
}


@pytest.mark.parametrize("code", sorted(REFUSALS))
def test_a_refused_update_keeps_the_previous_model_serving(
    code: str, make_agent: MakeAgent, cloud: FakeCloud, keys: Keys, tmp_path: object
) -> None:
    agent = make_agent()
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    make, event_kind = REFUSALS[code]
    cloud.deploy("dev-1", make(keys, tmp_path), generation=2, deployment_id="dep-2")

    assert agent.wait_for(lambda s: is_state(s, FAILED, 2), 5), agent.status()
    state = agent.status()
    assert state.last_error.code == code, state.last_error
    assert state.deployment_id == "dep-2"
    assert state.active_model.version == "v1" and _label(agent) == "v1:pos"
    assert event_kind in cloud.event_kinds("dev-1")[-3:]
    failure = [e for e in cloud.events("dev-1") if e.error.code][-1]
    assert failure.error.code == code and failure.deployment_id == "dep-2"


@pytest.mark.parametrize(("fault", "code"), [("corrupt", "digest_mismatch"), ("error_for", "download_failed")])
def test_bad_chunks_fail_the_update_and_keep_the_previous_model(
    fault: str, code: str, make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent()
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    getattr(cloud, fault).add(1)
    release = make_release(keys.signer, "v2", 2)
    cloud.deploy("dev-1", release, generation=2)

    assert agent.wait_for(lambda s: is_state(s, FAILED, 2), 5), agent.status()
    assert agent.status().last_error.code == code
    assert _label(agent) == "v1:pos"
    store = DiskModelStore(agent.settings.state_dir)
    assert not store.has_model(release.sha256) and store.received_chunks(release.sha256) == set()


def test_a_repeated_desired_state_is_only_re_reported(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys) -> None:
    agent = make_agent()
    good, bad = make_release(keys.signer, "v1", 1), make_release(keys.signer, "v2", 2, wrong_self_test=True)
    cloud.deploy("dev-1", good, generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    requests, seq = len(cloud.requests), agent.status().seq
    cloud.deploy("dev-1", good, generation=1)
    assert agent.wait_for(lambda s: s.seq > seq, 5)
    assert is_state(agent.status(), ACTIVE, 1) and len(cloud.requests) == requests

    cloud.deploy("dev-1", bad, generation=2)
    assert agent.wait_for(lambda s: is_state(s, FAILED, 2), 5)
    started = cloud.event_kinds("dev-1").count("UPDATE_STARTED")
    seq = agent.status().seq
    cloud.deploy("dev-1", bad, generation=2)
    assert agent.wait_for(lambda s: s.seq > seq, 5)
    assert is_state(agent.status(), FAILED, 2)
    assert cloud.event_kinds("dev-1").count("UPDATE_STARTED") == started


def test_a_new_generation_of_the_active_manifest_needs_no_download(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent()
    release = make_release(keys.signer, "v1", 1)
    cloud.deploy("dev-1", release, generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    requests = len(cloud.requests)
    cloud.deploy("dev-1", release, generation=2, deployment_id="dep-relabel")
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 2), 5)
    assert agent.status().deployment_id == "dep-relabel" and len(cloud.requests) == requests


def test_a_partial_download_resumes_after_a_restart(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys) -> None:
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=150))
    total = -(-len(release.artifacts[release.sha256]) // cloud.chunk_size)
    assert total >= 10
    cloud.drop_once.update(range(4, total))  # the first window arrives, then the link goes quiet
    agent = make_agent(chunk_window=4)
    cloud.deploy("dev-1", release, generation=1)
    store = DiskModelStore(agent.settings.state_dir)
    assert agent.wait_for(lambda s: store.received_chunks(release.sha256) == {0, 1, 2, 3}, 5)
    agent.stop()
    cloud.drop_once.clear()
    asked_before = len(cloud.requests)

    again = make_agent(chunk_window=4)
    assert again.wait_for(lambda s: is_state(s, ACTIVE, 1), 5), again.status()
    asked_after = [i for r in cloud.requests[asked_before:] for i in r.indexes]
    assert sorted(set(asked_after)) == list(range(4, total))
    assert _label(again) == "v1:pos"


def test_lost_chunks_are_asked_for_again_after_the_timeout(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys) -> None:
    clock = ManualClock()
    cloud.drop_once.add(1)
    agent = make_agent(clock=clock, chunk_timeout_s=5.0)
    release = make_release(keys.signer, "v1", 1)
    cloud.deploy("dev-1", release, generation=1)
    total = cloud.location(release.sha256).total_chunks
    store = DiskModelStore(agent.settings.state_dir)
    assert _wait(lambda: store.received_chunks(release.sha256) == set(range(total)) - {1})
    assert not is_state(agent.status(), ACTIVE)
    clock.advance(6.0)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5), agent.status()
    assert cloud.chunks_requested().count(1) == 2


def test_a_silent_cloud_fails_the_download_after_the_retries(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    clock = ManualClock()
    cloud.paused = True
    agent = make_agent(clock=clock, chunk_timeout_s=5.0, chunk_max_retries=2)
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    for attempt in range(1, 4):
        assert _wait(lambda attempt=attempt: cloud.chunks_requested().count(0) == attempt)
        clock.advance(6.0)
    assert agent.wait_for(lambda s: is_state(s, FAILED, 1), 5), agent.status()
    assert agent.status().last_error.code == "download_failed"


def test_a_newer_generation_supersedes_a_download_in_progress(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    cloud.paused = True
    agent = make_agent()
    old, new = make_release(keys.signer, "v1", 1), make_release(keys.signer, "v2", 2)
    cloud.deploy("dev-1", old, generation=1)
    assert _wait(lambda: len(cloud.requests) >= 1)
    cloud.deploy("dev-1", new, generation=2)
    cloud.resume()  # answers the stale requests for v1 too: the agent must ignore them
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 2), 5), agent.status()
    assert _label(agent) == "v2:pos"
    store = DiskModelStore(agent.settings.state_dir)
    assert not store.has_model(old.sha256) and store.received_chunks(old.sha256) == set()


def test_an_unsigned_clear_changes_nothing_and_a_signed_one_stops_the_deployment(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent()
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    cloud.send(device_topic("dev-1", Channel.DESIRED, fleet=keys.fleet), b"", retain=True)
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=0)  # a replay, handled after the clear
    assert _wait(lambda: any(e.error.code == "replay" for e in cloud.events("dev-1")))
    assert is_state(agent.status(), ACTIVE, 1)
    cleared = pb.DesiredState(device_id="dev-1", assignment=keys.assign("dev-1", 2, None), trust=keys.chain)
    cloud.send(device_topic("dev-1", Channel.DESIRED, fleet=keys.fleet), cleared.SerializeToString(), retain=True)
    assert agent.wait_for(lambda s: is_state(s, IDLE, 2), 5)
    assert _label(agent) == "v1:pos"  # still serving: a cleared deployment does not take the model away


def test_malformed_payloads_are_reported_and_survived(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys) -> None:
    agent = make_agent()
    desired = device_topic("dev-1", Channel.DESIRED, fleet=keys.fleet)
    for _ in range(50):  # a flood: the cloud hears of each reason once a minute, not 50 times
        cloud.send(desired, b"\xff\xff\xff\xff")
        cloud.send(desired, cloud.desired("dev-2", make_release(keys.signer, "v1", 1), 1))  # someone else's
        cloud.send(desired, pb.DesiredState(device_id="dev-1", generation=3).SerializeToString())  # unsigned
        cloud.send(device_topic("dev-1", Channel.ARTIFACT_DATA, fleet=keys.fleet), b"\x0a\x05")
    cloud.send(device_topic("dev-1", Channel.COMMAND, fleet=keys.fleet), b"\xff\xff")  # not a SignedCommand
    agent._on_transport_message("ef/v1/test/dev/dev-1/nonsense", b"x")  # a broker delivering what we never asked
    agent._on_transport_message("ef/v1/test/dev/dev-9/desired", b"x")
    agent._on_transport_message("ef/v1/other/dev/dev-1/desired", b"x")
    expected = {"malformed_payload", "wrong_device", "malformed"}
    assert _wait(lambda: {e.error.code for e in cloud.events("dev-1")} >= expected)
    assert _wait(lambda: [e.error.code for e in cloud.events("dev-1")].count("malformed") >= 2)  # the command's too
    assert _wait(lambda: False, 0.3) is False  # give stragglers time to arrive
    codes = [e.error.code for e in cloud.events("dev-1") if e.error.code]
    assert sorted(codes) == sorted([*expected, "malformed"]), codes  # "malformed": the desired state and the command

    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    assert _label(agent) == "v1:pos"


def test_an_active_model_that_no_longer_loads_falls_back_to_the_previous_one(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent()
    v1, v2 = make_release(keys.signer, "v1", 1), make_release(keys.signer, "v2", 2)
    cloud.deploy("dev-1", v1, generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    cloud.deploy("dev-1", v2, generation=2)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 2), 5)
    agent.stop()
    (agent.settings.state_dir / "models" / v2.sha256).write_bytes(b"bit rot")

    again = make_agent()
    assert _label(again) == "v1:pos"  # the previous model serves at once
    kinds = cloud.event_kinds("dev-1")
    assert "ROLLED_BACK" in kinds
    # the retained desired state (generation 2) is handled again: v2 is fetched afresh and activated
    assert again.wait_for(lambda s: is_state(s, ACTIVE, 2) and s.active_model.version == "v2", 5), again.status()
    assert _label(again) == "v2:pos"


def _wait(predicate, timeout_s: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    from support import wait_until

    return bool(wait_until(predicate, timeout_s))


def test_a_device_offline_past_expiry_serves_on_and_installs_the_refreshed_assignment(
    make_agent: MakeAgent, broker: object, cloud: FakeCloud, keys: Keys
) -> None:
    clock = ManualClock()
    agent = make_agent(clock=clock)
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    # v2 is assigned while the device is away; by the time it is back, the assignment has lapsed
    v2 = make_release(keys.signer, "v2", 2)
    lapses = clock.now().wall_ms + 3_600_000
    clock.advance(2 * 3600)
    stale = desired_state("dev-1", v2, 2, chunk_size=cloud.chunk_size, expires_at_ms=lapses)
    cloud.artifacts.update(v2.artifacts)
    cloud.send(device_topic("dev-1", Channel.DESIRED, fleet=keys.fleet), stale.SerializeToString(), retain=True)
    assert _wait(lambda: any(e.error.code == "expired" for e in cloud.events("dev-1")))
    assert is_state(agent.status(), ACTIVE, 1) and _label(agent) == "v1:pos"  # never stops serving
    # the cloud refreshes it (a new counter, a new expiry): the device installs it
    fresh = desired_state("dev-1", v2, 3, chunk_size=cloud.chunk_size, expires_at_ms=clock.now().wall_ms + 86_400_000)
    cloud.send(device_topic("dev-1", Channel.DESIRED, fleet=keys.fleet), fresh.SerializeToString(), retain=True)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 3), 5) and _label(agent) == "v2:pos"


def test_rotated_keys_reach_the_device_over_the_trust_topic_and_survive_a_restart(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys, tmp_path: Path
) -> None:
    fleet = make_keys(tmp_path / "fleet", fleet=keys.fleet)  # a fleet of this test's own: its keys rotate
    agent = make_agent(trust_path=fleet.trust_path)
    rotated = rotate_director(fleet)
    cloud.send(trust_topic(fleet.fleet), rotated.chain.SerializeToString())  # not retained: the journal must keep it
    old_director = fleet.director
    # the old director key is retired: an assignment it signs (with no chain attached) is refused ...
    stale = desired_state("dev-1", make_release(fleet.signer, "v1", 1), 1, chunk_size=cloud.chunk_size)
    stale.ClearField("trust")
    stale.assignment.CopyFrom(fleet.assign("dev-1", 1, stale.manifest, key=old_director))
    cloud.artifacts.update(make_release(fleet.signer, "v1", 1).artifacts)
    cloud.send(device_topic("dev-1", Channel.DESIRED, fleet=keys.fleet), stale.SerializeToString())
    assert _wait(lambda: any(e.error.code == "unknown_key" for e in cloud.events("dev-1")))
    agent.stop()
    # ... also after a restart (the followed root is in the journal), while the new key's is installed
    again = make_agent(trust_path=fleet.trust_path)
    release = make_release(rotated.signer, "v2", 2)
    fresh = desired_state("dev-1", release, 2, chunk_size=cloud.chunk_size)
    fresh.ClearField("trust")  # no chain in the message: the device must already know the new key
    cloud.artifacts.update(release.artifacts)
    cloud.send(device_topic("dev-1", Channel.DESIRED, fleet=keys.fleet), fresh.SerializeToString(), retain=True)
    assert again.wait_for(lambda s: is_state(s, ACTIVE, 2), 5)
