"""Attacks on the cloud's sampler hints (the `cmd` channel, protocols.commands): a forged hint, one signed
by a key of the wrong role, an oversize one (10^6 bins), a replay of an older hint after a newer one, a
hint for another device, one naming bins the model lacks. Each is refused with its code in an error
event, changes nothing and leaves the agent serving; a genuine hint still works after all of them and
survives a restart, while its replay does not.

(That no device can publish on a `cmd` topic at all is the broker's part:
tests/attacks/test_attack_broker_identities.py.)"""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import wait_until
from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.releases import Keys, make_release

from protocols.commands import sign_command
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

ACTIVE = pb.UPDATE_STATE_ACTIVE


def _signed(keys: Keys, counter: int, pairs: list[tuple[int, int]], *, device: str = "dev-1",
            key: Ed25519PrivateKey | None = None, model: str = "demo", ttl_ms: int = 600_000) -> bytes:  # fmt: skip
    now = int(time.time() * 1000)
    hint = pb.SamplerHint(model=pb.ModelRef(model_id=model, version="v1"), features=[f for f, _ in pairs],
                          bins=[k for _, k in pairs])  # fmt: skip
    command = pb.Command(fleet=keys.fleet, device_id=device, counter=counter, issued_at_ms=now,
                         expires_at_ms=now + ttl_ms, sampler_hint=hint)  # fmt: skip
    return sign_command(key or keys.director, command).SerializeToString()


def _codes(cloud: FakeCloud) -> set[str]:
    return {e.error.code for e in cloud.events("dev-1") if e.kind == pb.EVENT_KIND_ERROR}


def _refused(cloud: FakeCloud, code: str) -> bool:
    return bool(wait_until(lambda: code in _codes(cloud), 5))


def test_forged_oversize_replayed_and_misaddressed_hints_change_nothing(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent(sample_favour=4.0)
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    cmd = device_topic("dev-1", Channel.COMMAND, fleet=keys.fleet)
    sampler = agent._sampler

    cloud.send(cmd, _signed(keys, 10, [(1, 3)]))  # genuine: feature 1's top bin
    assert wait_until(lambda: sampler.hinted_bins == 1, 5)

    attacks = [
        (_signed(keys, 20, [(0, 0), (2, 0)], key=Ed25519PrivateKey.generate()), "unknown_key"),  # forged
        (_signed(keys, 21, [(0, 0)], key=keys.targets), "unknown_key"),  # a targets key is no director
        (_signed(keys, 22, [(0, 0)], device="dev-2"), "wrong_device"),  # another device's, sent to this one
        (_signed(keys, 23, [(f, 0) for f in range(1_000_000)]), "too_large"),  # 10^6 bins: refused unread
        (_signed(keys, 24, [(0, 9)]), "malformed"),  # a bin the model's profile lacks
        (_signed(keys, 25, [(0, 0)], ttl_ms=-1), "expired"),
    ]
    for payload, code in attacks:
        cloud.send(cmd, payload)
        assert _refused(cloud, code), (code, _codes(cloud))
        assert sampler.hinted_bins == 1 and agent._commands.counter == 10  # still the genuine hint
        assert str(agent.predict([0.9, 0.1, 0.1]).labels[0]) == "v1:pos"  # and serving

    clear = _signed(keys, 30, [])  # the cloud clears the hint (its alert no longer names the device)
    old = _signed(keys, 11, [(0, 0), (1, 3), (2, 3)])  # an older genuine hint, captured and replayed after it
    cloud.send(cmd, clear)
    assert wait_until(lambda: agent._commands.counter == 30 and sampler.hinted_bins == 0, 5)
    cloud.send(cmd, old)
    assert _refused(cloud, "replay")
    assert sampler.hinted_bins == 0 and agent._commands.counter == 30

    cloud.send(cmd, _signed(keys, 31, [(2, 3)], model="another"))  # for a model this device does not run
    assert wait_until(lambda: agent._commands.counter == 31, 5)
    assert sampler.hinted_bins == 0  # accepted (it is the newest word) and inert


def test_a_hint_survives_a_restart_and_its_replay_after_the_restart_is_refused(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent()
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, ACTIVE, 1), 5)
    cmd = device_topic("dev-1", Channel.COMMAND, fleet=keys.fleet)
    older, newer = _signed(keys, 40, [(0, 0), (1, 0)]), _signed(keys, 41, [(2, 3)])
    cloud.send(cmd, older)
    cloud.send(cmd, newer)
    assert wait_until(lambda: agent._commands.counter == 41, 5)
    agent.stop()

    again = make_agent()  # the same state dir: a restart
    assert again._commands.counter == 41 and again._sampler.hinted_bins == 1  # the newer hint, from disk
    cloud.send(cmd, older)
    assert wait_until(lambda: "replay" in {e.error.code for e in cloud.events("dev-1")}, 5)
    assert again._sampler.hinted_bins == 1 and again._commands.counter == 41
