"""Faults around the agent: a failing disk, a lost link, a crash between two steps, a corrupt journal,
and the telemetry timer."""

from __future__ import annotations

from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.releases import Keys, make_release

from edge_agent.clock import ManualClock
from edge_agent.errors import StoreError
from edge_agent.store import MemoryModelStore
from edge_agent.transport import MemoryTransport
from edge_agent.update.journal import ChunkLayout, InstalledModel, Journal, PendingUpdate
from protocols.topics import Channel
from protocols.v1 import messages_pb2 as pb

ACTIVE, FAILED = pb.UPDATE_STATE_ACTIVE, pb.UPDATE_STATE_FAILED


class FullDisk(MemoryModelStore):
    full = False

    def write_chunk(self, sha256: str, index: int, offset: int, data: bytes) -> None:
        if self.full:
            raise StoreError("no space left on device")
        super().write_chunk(sha256, index, offset, data)


def test_a_failing_disk_fails_the_update_and_keeps_the_model(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    store = FullDisk()
    agent = make_agent(store=store)
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    store.full = True
    cloud.deploy("dev-1", make_release(keys.signer, "v2", 2), generation=2)
    assert agent.wait_for(lambda s: is_state(s, FAILED, 2), 5), agent.status()
    assert agent.status().last_error.code == "store_failed"
    assert "no space" in agent.status().last_error.message
    assert agent.predict([0.9, 0.1, 0.1]).labels == ["v1:pos"]


def test_a_lost_link_fires_the_will_and_a_reconnect_resumes(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent()
    transport = agent.transport
    assert isinstance(transport, MemoryTransport)
    cloud.paused = True
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: s.update_state == pb.UPDATE_STATE_DOWNLOADING, 5)
    asked = len(cloud.requests)
    transport.go_offline()
    assert not pb.Presence.FromString(cloud.retained("dev-1", Channel.PRESENCE) or b"").online
    cloud.resume()  # the requests sent before the link dropped are answered into the void
    cloud.paused = False
    transport.start()  # back online: presence, and the chunks in flight are asked for again
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5), agent.status()
    assert len(cloud.requests) > asked
    assert pb.Presence.FromString(cloud.retained("dev-1", Channel.PRESENCE) or b"").online


def test_a_download_committed_but_not_journalled_is_verified_not_fetched(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    release = make_release(keys.signer, "v1", 1)
    data = release.artifacts[release.sha256]
    store = MemoryModelStore()
    store.models[release.sha256] = data  # the crash came after the rename, before the journal said so
    target = InstalledModel(release.signed.SerializeToString(), release.sha256)
    layout = ChunkLayout(release.sha256, len(data), 16, -(-len(data) // 16))
    store.save_journal(Journal(pending=PendingUpdate(1, "dep-1", target, layout)))
    agent = make_agent(store=store)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5), agent.status()
    assert cloud.requests == []


def test_a_lost_partial_file_restarts_the_download(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys) -> None:
    release = make_release(keys.signer, "v1", 1)
    cloud.deploy("dev-1", release, generation=1)
    data = release.artifacts[release.sha256]
    store = MemoryModelStore()
    target = InstalledModel(release.signed.SerializeToString(), release.sha256)
    layout = ChunkLayout(release.sha256, len(data), 16, -(-len(data) // 16))
    store.save_journal(Journal(pending=PendingUpdate(1, "dep-1", target, layout)))
    agent = make_agent(store=store)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5), agent.status()


def test_a_corrupt_journal_starts_afresh_and_says_so(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys) -> None:
    store = MemoryModelStore()
    store.journal_bytes = b"{not json"
    agent = make_agent(store=store)
    assert agent.wait_for(lambda s: s.update_state == pb.UPDATE_STATE_IDLE and s.seq > 0, 5)
    assert any(e.error.code == "store_failed" for e in cloud.events("dev-1"))
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)


def test_telemetry_is_flushed_every_interval(make_agent: MakeAgent, cloud: FakeCloud, keys: Keys) -> None:
    clock = ManualClock()
    agent = make_agent(clock=clock, telemetry_interval_s=30.0)
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    agent.predict([0.9, 0.1, 0.1])
    assert cloud.payloads("dev-1", Channel.TELEMETRY) == []
    clock.advance(31.0)
    assert _wait(lambda: len(cloud.payloads("dev-1", Channel.TELEMETRY)) == 1)
    clock.advance(31.0)
    assert _wait(lambda: len(cloud.payloads("dev-1", Channel.TELEMETRY)) == 2)
    first, second = (pb.TelemetryWindow.FromString(p) for p in cloud.payloads("dev-1", Channel.TELEMETRY))
    assert (first.inference_count, second.inference_count) == (1, 0)
    assert second.seq > first.seq and second.window_start_ms == first.window_end_ms


def _wait(predicate, timeout_s: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    from support import wait_until

    return bool(wait_until(predicate, timeout_s))
