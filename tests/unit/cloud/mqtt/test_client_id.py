"""The cloud worker's MQTT client id: the same on every start of one data_dir (so the broker's persistent
session is found again), different for another data_dir, and never shared by two live processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cloud.errors import ConfigurationError
from cloud.mqtt.client_id import cloud_client_id, default_worker_name, lease_client_id


def test_the_same_data_dir_gets_the_same_id_on_every_start(tmp_path: Path) -> None:
    first = lease_client_id(tmp_path / "a", "acme")
    first_id = first.client_id
    first.release()
    again = lease_client_id(tmp_path / "a", "acme")
    other = lease_client_id(tmp_path / "b", "acme")
    try:
        assert again.client_id == first_id
        assert first_id.startswith("edgefleet-cloud-acme-") and default_worker_name(tmp_path / "a") in first_id
        assert other.client_id != first_id  # another data_dir on this host is another worker
    finally:
        again.release()
        other.release()


def test_a_second_holder_on_one_data_dir_takes_the_next_name(tmp_path: Path) -> None:
    first = lease_client_id(tmp_path, "acme")
    second = lease_client_id(tmp_path, "acme")
    try:
        assert second.client_id == f"{first.client_id}-2"
        first.release()
        third = lease_client_id(tmp_path, "acme")  # the freed name is taken again: stable as workers come back
        assert third.client_id == first.client_id
        third.release()
    finally:
        second.release()


def test_an_explicit_worker_name_held_elsewhere_is_refused(tmp_path: Path) -> None:
    held = lease_client_id(tmp_path, "acme", worker_name="ingest-1")
    try:
        assert held.client_id == cloud_client_id("acme", "ingest-1") == "edgefleet-cloud-acme-ingest-1"
        with pytest.raises(ConfigurationError, match="in use by another process"):
            lease_client_id(tmp_path, "acme", worker_name="ingest-1")
        explicit = lease_client_id(tmp_path, "acme", client_id="my-cloud")
        assert explicit.client_id == "my-cloud"
        explicit.release()
    finally:
        held.release()


def test_the_lock_holds_against_another_process_and_ends_with_it(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from cloud.mqtt.client_id import lease_client_id
        lease = lease_client_id(Path({str(tmp_path)!r}), "acme", worker_name="w")
        print(lease.client_id, flush=True)
        sys.stdin.read()  # hold until told
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[4],
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "edgefleet-cloud-acme-w"
        with pytest.raises(ConfigurationError):
            lease_client_id(tmp_path, "acme", worker_name="w")
    finally:
        child.communicate("", timeout=10)
    lease = lease_client_id(tmp_path, "acme", worker_name="w")  # the process ended: its lock with it
    lease.release()


def test_client_ids_stay_short_and_safe() -> None:
    long_id = cloud_client_id("f" * 80, "worker with spaces/and#wildcards+" * 3)
    assert len(long_id) <= 100 and " " not in long_id and "#" not in long_id and "+" not in long_id
    assert long_id != cloud_client_id("f" * 80, "another worker" * 8)


def test_worker_name_and_session_expiry_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from cloud.settings import CloudSettings

    assert CloudSettings().mqtt_session_expiry_s == 86_400  # a day: a weekend-long outage needs more
    monkeypatch.setenv("EDGEFLEET_WORKER_NAME", "ingest-7")
    monkeypatch.setenv("EDGEFLEET_MQTT_SESSION_EXPIRY_S", "600")
    settings = CloudSettings()
    assert (settings.worker_name, settings.mqtt_session_expiry_s) == ("ingest-7", 600)
