"""Who answers a device's chunk requests when every cloud process hears them (cloud.mqtt.ownership)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Engine

from cloud.mqtt.ownership import Ownership, owner_of

DEVICES = [f"dev-{i}" for i in range(1000)]


def test_every_device_has_one_owner_the_load_is_split_and_a_leaver_moves_only_its_share() -> None:
    three = ["a", "b", "c"]
    owners = {d: owner_of(d, three) for d in DEVICES}
    assert owners == {d: owner_of(d, list(reversed(three))) for d in DEVICES}  # order does not matter
    assert all(250 < n < 420 for n in Counter(owners.values()).values())
    two = {d: owner_of(d, ["a", "b"]) for d in DEVICES}
    assert all(two[d] == owners[d] for d in DEVICES if owners[d] != "c")  # only c's devices moved


def test_processes_sharing_a_database_split_the_devices_and_take_over_a_leavers(any_engine: Engine) -> None:
    clock = [1_800_000_000_000]
    a = Ownership(any_engine, fleet="lab", member_id="cloud-a", clock=lambda: clock[0])
    b = Ownership(any_engine, fleet="lab", member_id="cloud-b", clock=lambda: clock[0])
    other_fleet = Ownership(any_engine, fleet="other", member_id="cloud-x", clock=lambda: clock[0])
    assert a.owns("dev-1") and b.owns("dev-1")  # before anyone has looked: alone, everything is ours
    a.tick(), b.tick(), other_fleet.tick()
    assert a.tick() == ("cloud-a", "cloud-b")
    assert all(a.owns(d) != b.owns(d) for d in DEVICES)  # exactly one answers each device
    b.stop()  # leaves at once
    assert a.tick() == ("cloud-a",) and all(a.owns(d) for d in DEVICES)
    b.tick()  # back; then silent for longer than ttl_s: dead
    assert a.tick() == ("cloud-a", "cloud-b")
    clock[0] += 21_000
    assert a.tick() == ("cloud-a",)
