"""`edgefleet sim run` with network profiles and device faults (embedded parts, 9 devices): devices on 3G
and on a custom satellite link update through the shaping proxy, one of them through a corrupted chunk,
one after its link was cut; a device whose disk is full and one whose clock is 8 days ahead fail, each
with its reason (one 30 days behind updates); the report says so per group and per network profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.sim_cli import run_scenario_cli

from cloud.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SCENARIO = """
[scenario]
name = "links"
duration_s = 6
seed = 5
telemetry_interval_s = 2

[networks.slow-sat]
base = "satellite"
disconnects_per_hour = 0
bandwidth_kbps = 500

[[groups]]
name = "cell"
count = 3
network = "3g"
data = { rate_hz = 2 }

[[groups]]
name = "sky"
count = 2
network = "slow-sat"

[[groups]]
name = "lab"
count = 1

[[groups]]
name = "full"
count = 1

[[groups]]
name = "skewed"
count = 1

[[groups]]
name = "behind"
count = 1

[[events]]
at_s = 0
action = "clock_skew"
group = "skewed"
offset_s = 691200

[[events]]
at_s = 0
action = "clock_skew"
group = "behind"
offset_s = -2592000

[[events]]
at_s = 0
action = "disk_full"
group = "full"

[[events]]
at_s = 0
action = "corrupt"
group = "cell"
chunks = 1

[[events]]
at_s = 0.2
action = "disconnect"
group = "sky"
offline_s = 1.5

[[events]]
at_s = 0.5
action = "deploy"
"""


def test_profiles_and_faults_end_every_update_with_an_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, report = run_scenario_cli(tmp_path, "links", SCENARIO, capsys)
    assert code == 1, out  # two devices failed, as they should
    groups = {g["name"]: g for g in report["groups"]}
    assert groups["cell"]["network"] == "3g" and groups["sky"]["network"] == "slow-sat"
    for name in ("cell", "sky", "lab", "behind"):  # a clock 30 days behind: nothing has expired yet
        assert groups[name]["updates"]["updated"] == groups[name]["devices"], (name, report["failures"])
    assert groups["cell"]["corrupted_chunks"] == 1  # tampered on its way, refused, fetched again
    assert groups["sky"]["disconnects"] == 1  # cut at the proxy before the deploy, and updated once back
    assert set(report["failures"]) == {"full-0001", "skewed-0001"}
    assert "No space left on device" in report["failures"]["full-0001"]
    assert "expired" in report["failures"]["skewed-0001"]
    assert groups["full"]["updates"]["failed"] == groups["skewed"]["updates"]["failed"] == 1
    networks = report["networks"]
    assert networks["3g"]["updated"] == 3 and networks["slow-sat"]["updated"] == 2
    assert networks["unshaped"] == {**networks["unshaped"], "targeted": 4, "updated": 2, "failed": 2, "pending": 0}
    # a satellite round trip is 0.6 s and an update takes several: never faster than that
    assert networks["slow-sat"]["update_p50_s"] >= 0.6
    assert networks["slow-sat"]["update_p95_s"] >= networks["slow-sat"]["update_p50_s"]
    details = {d["device_id"]: d for d in report["devices_detail"]}
    assert details["full-0001"]["outcome"] == "failed" and details["cell-0001"]["outcome"] == "updated"
    assert "updates per network profile" in out and "slow-sat" in out


OWN_MOSQUITTO = """
[scenario]
name = "restart"
duration_s = 5
seed = 4
broker = "mosquitto"

[networks.slow]
base = "3g"
bandwidth_kbps = 16
disconnects_per_hour = 0

[[groups]]
name = "slow"
count = 3
network = "slow"

[[groups]]
name = "near"
count = 2

[[events]]
at_s = 0
action = "deploy"

[[events]]
at_s = 1
action = "broker_restart"
"""


def test_a_mosquitto_the_scenario_owns_restarts_mid_rollout_and_every_update_completes(tmp_path: Path) -> None:
    path = tmp_path / "restart.toml"
    path.write_text(OWN_MOSQUITTO)
    report_path = tmp_path / "report.json"
    code = main(["sim", "run", str(path), "--data-dir", str(tmp_path / "run"), "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert code == 0, report["failures"]
    assert (tmp_path / "run" / "mosquitto" / "mosquitto.db").exists()  # saved at the restart: retained kept
    assert report["networks"]["slow"]["updated"] == 3 and report["networks"]["unshaped"]["updated"] == 2
    # 1.7 KB at 16 kbit/s is over a second: the slow devices were still fetching when the broker went away
    assert report["networks"]["slow"]["update_p50_s"] > 1.0
    assert "broker restarted" in " | ".join(what for _t, what in report["timeline"])


def test_broker_restart_against_a_broker_the_run_does_not_own_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "restart.toml"
    path.write_text(OWN_MOSQUITTO.replace('broker = "mosquitto"\n', ""))
    args = ["sim", "run", str(path), "--data-dir", str(tmp_path / "run"), "--mqtt-url", "mqtt://127.0.0.1:1883"]
    assert main(args) == 2
    assert "broker_restart needs a broker the scenario owns" in capsys.readouterr().out


OUTCOMES = """
[scenario]
name = "outcomes"
duration_s = 3
seed = 6

[[groups]]
name = "ok"
count = 3

[[groups]]
name = "cut"
count = 2

[[groups]]
name = "down"
count = 1

[[groups]]
name = "full"
count = 1

[[events]]
at_s = 0
action = "disk_full"
group = "full"

[[events]]
at_s = 0.3
action = "deploy"

[[events]]
at_s = 0.3
action = "disconnect"
group = "cut"
devices = 2
offline_s = 60

[[events]]
at_s = 0.3
action = "crash"
group = "down"
restart_after_s = 60
"""


def test_every_update_that_did_not_complete_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Cut at the deploy and kept offline past the drain time, crashed and not restarted, a full disk: each
    device that does not update has its reason in the report, and none is left without one ("stalled":
    the link up and the update neither done nor failed). The report used to say "still idle" for all three."""
    code, out, report = run_scenario_cli(tmp_path, "outcomes", OUTCOMES, capsys)
    assert code == 1, out
    updates = report["updates"]
    assert updates["targeted"] == 7 and updates["updated"] == 3 and updates["stalled"] == 0, updates
    assert updates["failed"] + updates["pending"] == 4
    assert updates["reasons"] == {"link_down": 2, "crashed": 1, "agent_error": 1}, updates
    details = {d["device_id"]: d for d in report["devices_detail"]}
    for device in details.values():  # every one either completed or says why
        assert device["outcome"] == "updated" or device["reason"].partition(":")[2].strip(), device
    assert details["cut-0001"]["reason"].startswith("link_down: offline at the end")
    assert details["down-0001"]["reason"].startswith("crashed: agent down at the end")
    assert "No space left on device" in details["full-0001"]["reason"]
    assert set(report["failures"]) == {"cut-0001", "cut-0002", "down-0001", "full-0001"}
    assert "updates: 3 of 7 completed, 1 failed with a reason, 3 under way with a reason" in out
