"""The broker access rules as data (cloud.identity.acl): what the embedded broker checks and Mosquitto gets."""

import pytest

from cloud.identity.acl import Access, cloud_grants, device_grants, is_allowed, render_mosquitto_acl

FLEET = "lab"
DEV = device_grants(FLEET)


@pytest.mark.parametrize(
    ("user", "access", "topic", "allowed"),
    [
        ("pi-01", Access.WRITE, "ef/v1/lab/dev/pi-01/telemetry", True),
        ("pi-01", Access.WRITE, "ef/v1/lab/dev/pi-01/reported", True),
        ("pi-01", Access.WRITE, "ef/v1/lab/dev/pi-02/telemetry", False),  # posing as another device
        ("pi-01", Access.WRITE, "ef/v1/lab/dev/pi-01/desired", False),  # a downward channel
        ("pi-01", Access.WRITE, "ef/v1/lab/trust", False),
        ("pi-01", Access.READ, "ef/v1/lab/dev/pi-01/desired", True),
        ("pi-01", Access.READ, "ef/v1/lab/trust", True),
        ("pi-01", Access.READ, "ef/v1/lab/dev/pi-02/desired", False),
        ("pi-01", Access.READ, "ef/v1/lab/dev/+/desired", False),  # a wildcard spanning devices
        ("pi-01", Access.READ, "ef/v1/lab/#", False),
        ("pi-01", Access.READ, "ef/v1/lab/dev/pi-01/telemetry", False),  # upward: not for devices to read
        ("pi-01", Access.WRITE, "ef/v1/other/dev/pi-01/telemetry", False),  # another fleet
        ("+", Access.READ, "ef/v1/lab/dev/+/desired", False),  # a user name that is a wildcard
        ("", Access.READ, "ef/v1/lab/trust", False),
        # fan-out chunks: every device reads, none writes (planting or clearing a retained chunk)
        ("pi-01", Access.READ, f"ef/v1/lab/art/{'ab' * 32}/4096/+", True),
        ("pi-01", Access.READ, f"ef/v1/lab/art/{'ab' * 32}/4096/0", True),
        ("pi-01", Access.WRITE, f"ef/v1/lab/art/{'ab' * 32}/4096/0", False),
        ("pi-01", Access.READ, f"ef/v1/other/art/{'ab' * 32}/4096/+", False),
    ],
)
def test_device_rules(user: str, access: Access, topic: str, allowed: bool) -> None:
    assert is_allowed(DEV, user, access, topic) is allowed


def test_the_cloud_may_do_anything_in_its_fleet_and_nothing_outside() -> None:
    grants = cloud_grants(FLEET)
    assert is_allowed(grants, "edgefleet-cloud", Access.READ, "ef/v1/lab/dev/+/telemetry")
    assert is_allowed(grants, "edgefleet-cloud", Access.WRITE, "ef/v1/lab/dev/pi-01/desired")
    assert not is_allowed(grants, "edgefleet-cloud", Access.READ, "ef/v1/other/dev/+/telemetry")


def test_the_mosquitto_rendering_names_every_grant() -> None:
    text = render_mosquitto_acl(FLEET, "edgefleet-cloud")
    assert "user edgefleet-cloud\ntopic readwrite ef/v1/lab/#" in text
    assert "pattern write ef/v1/lab/dev/%u/telemetry" in text and "pattern read ef/v1/lab/trust" in text
    assert text.count("pattern ") == len(DEV)
