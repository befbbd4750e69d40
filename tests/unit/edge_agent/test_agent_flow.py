"""The agent end to end over an in-memory broker: updates, restarts, refusals, duplicates, resumes."""

from __future__ import annotations

import pytest
from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.releases import Keys, make_keys, make_release, model_bytes

from edge_agent.clock import ManualClock
from edge_agent.store import DiskModelStore
from protocols.topics import Channel, device_topic
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


def _bad_signature(keys: Keys, _tmp: object) -> object:
    release = make_release(keys.signer, "v2", 2)
    release.signed.signature = bytes(64)
    return release


def _unknown_key(keys: Keys, tmp: object) -> object:
    other = make_keys(tmp / "other-keys")  # type: ignore[operator]
    return make_release(other.signer, "v2", 2)


REFUSALS = {
    "bad_signature": (_bad_signature, "VERIFICATION_FAILED"),
    "unknown_key": (_unknown_key, "VERIFICATION_FAILED"),
    "expired": (lambda keys, _: make_release(keys.signer, "v2", 2, expires_at_ms=1000), "VERIFICATION_FAILED"),
    "rollback": (lambda keys, _: make_release(keys.signer, "v0", 1, data=model_bytes("v0")), "VERIFICATION_FAILED"),
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


def test_clearing_the_desired_state_keeps_the_model_serving(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent()
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    cloud.send(device_topic("dev-1", Channel.DESIRED), b"", retain=True)
    assert agent.wait_for(lambda s: s.update_state == IDLE, 5)
    assert _label(agent) == "v1:pos"


def test_malformed_payloads_are_reported_and_survived(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys) -> None:
    agent = make_agent()
    desired = device_topic("dev-1", Channel.DESIRED)
    cloud.send(desired, b"\xff\xff\xff\xff")
    cloud.send(desired, cloud.desired("dev-2", make_release(keys.signer, "v1", 1), 1))  # someone else's
    cloud.send(desired, pb.DesiredState(device_id="dev-1", generation=3).SerializeToString())  # no manifest
    cloud.send(device_topic("dev-1", Channel.ARTIFACT_DATA), b"\x0a\x05")
    cloud.send(device_topic("dev-1", Channel.COMMAND), b"anything")  # no command defined yet: ignored
    agent._on_transport_message("ef/v1/dev/dev-1/nonsense", b"x")  # a broker delivering what we never asked
    agent._on_transport_message("ef/v1/dev/dev-9/desired", b"x")
    agent._on_transport_message("ef/v1/dev/dev-1/telemetry", b"x")
    malformed = 7
    assert _wait(lambda: sum(e.error.code == "malformed_payload" for e in cloud.events("dev-1")) == malformed)

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
