"""Scenario files: the bundled example parses, and each kind of mistake is refused with a message that
names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.scenario import Crash, Drift, ScenarioError, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[3]
MINIMAL = """
[scenario]
name = "t"
duration_s = 10

[[groups]]
name = "a"
count = 3
"""


def test_the_example_scenario_parses() -> None:
    scenario = load_scenario(ROOT / "examples/scenarios/two-sites.toml")
    assert scenario.size == 12 and [g.name for g in scenario.groups] == ["lab", "field"]
    assert {type(e).__name__ for e in scenario.events} == {"Deploy", "Drift", "Disconnect", "Crash", "BrokerRestart"}
    assert scenario.group("lab").hardware is not None
    assert scenario.group("lab").hardware.facts().memory_total_bytes == 4096 << 20
    assert scenario.devices_of("field")[:2] == ["field-0001", "field-0002"]


def test_a_minimal_scenario_gets_defaults() -> None:
    scenario = parse_scenario(MINIMAL)
    assert scenario.model.estimator == "logreg" and scenario.events == []
    assert scenario.groups[0].data.rate_hz == 2.0 and scenario.groups[0].hardware is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[events]]\nat_s = 1\naction = "drift"\ngroup = "b"\n', "events[0].group: no group named 'b'"),
        ('[[events]]\nat_s = 11\naction = "deploy"\n', "events[0].at_s: 11 is after the end"),
        ('[[events]]\nat_s = 1\naction = "explode"\n', "events[0]: Input tag 'explode' found"),
        ('[[events]]\nat_s = 1\naction = "crash"\ndevices = 5\n', "events[0].devices: 5 but the group has only 3"),
        ('[[events]]\nat_s = -1\naction = "deploy"\n', "events[0].at_s: Input should be greater than or equal to 0"),
        ('[[groups]]\nname = "a"\ncount = 1\n', "the name 'a' is used twice"),
        ('[[groups]]\nname = "b"\ncount = 0\n', "groups[1].count: Input should be greater than or equal to 1"),
        ('[[groups]]\nname = "b c"\ncount = 1\n', "groups[1]: group names, label keys and values follow"),
        ('[[groups]]\nname = "b"\ncount = 1\ncolour = "red"\n', "groups[1].colour: Extra inputs are not permitted"),
        ('[model]\nestimator = "svm"\n', "model.estimator: Input should be 'logreg', 'mlp' or 'random_forest'"),
    ],
)
def test_mistakes_are_named(extra: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(MINIMAL + extra, "s.toml")
    assert message in str(caught.value) and str(caught.value).startswith("s.toml: ")


def test_not_toml_and_a_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="s.toml: not valid TOML"):
        parse_scenario("[scenario\n", "s.toml")
    with pytest.raises(ScenarioError, match="cannot read the scenario"):
        load_scenario(tmp_path / "absent.toml")


def test_drift_strength_follows_its_kind() -> None:
    scenario = parse_scenario(
        MINIMAL
        + """
[[events]]
at_s = 1
action = "drift"
kind = "gradual"
ramp_s = 4

[[events]]
at_s = 1
action = "drift"
kind = "recurring"
period_s = 2

[[events]]
at_s = 2
action = "crash"
"""
    )
    gradual, recurring, crash = scenario.events
    assert isinstance(gradual, Drift) and isinstance(recurring, Drift) and isinstance(crash, Crash)
    assert [gradual.strength(t) for t in (-1, 0, 2, 4, 9)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert [recurring.strength(t) for t in (0, 1.9, 2.1, 4.5)] == [1.0, 1.0, 0.0, 1.0]
    assert crash.devices == 1 and crash.restart_after_s == 3.0


def test_a_scenarios_sample_budget_is_a_devices_scaled_to_its_shorter_windows() -> None:
    from edge_agent.config import AgentSettings
    from simulator.scenario import ScenarioInfo
    from simulator.scenario_run import sample_budget

    device_day = AgentSettings.sample_bytes_per_day
    # 1 s windows: 60 of them in a device's one, each allowed what a device's window may ship
    assert sample_budget(ScenarioInfo(name="s", duration_s=10, telemetry_interval_s=1)) == 60 * device_day
    assert sample_budget(ScenarioInfo(name="s", duration_s=10, telemetry_interval_s=120)) == device_day
    assert sample_budget(ScenarioInfo(name="s", duration_s=10, sample_bytes_per_day=5)) == 5
