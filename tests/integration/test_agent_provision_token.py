"""`edgefleet-agent provision --token` against a real cloud stack: the device's process spends the token
over HTTP (urllib), writes a 0600 config with its broker credentials and the trust chain beside it, and
imports nothing of the cloud while doing so. A spent token, an unreachable cloud, a chain that does not
match the pinned one: exit code 2 and one line saying why; an existing config: refused before the token
is spent."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session
from support import free_port

from cloud.cli.operator_token import ensure_dev_token
from cloud.db.tables import Device
from cloud.identity.passwords import verify_password
from cloud.identity.records import DeviceCredential, EnrollmentToken
from cloud.registry.keys import KeyStore
from cloud.service import CloudService
from cloud.settings import CloudSettings
from edge_agent.config import load_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NEVER_ON_A_DEVICE = ("cloud", "model_compiler", "fastapi", "sqlmodel", "sklearn", "uvicorn", "amqtt", "httpx")


@pytest.fixture
def cloud(tmp_path: Path, database_url: str) -> Iterator[CloudService]:
    settings = CloudSettings(data_dir=tmp_path / "cloud", database_url=database_url, api_port=0)
    with CloudService(settings) as service:
        yield service


def new_token(cloud: CloudService, **body: object) -> str:
    assert cloud.engine is not None
    found = ensure_dev_token(cloud.engine, cloud.settings.data_dir)
    assert found is not None
    headers = {"Authorization": f"Bearer {found[0].read_text().strip()}"}
    response = httpx.post(f"{cloud.api_url}/api/v1/enrollment-tokens", json=body, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def provision(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The device's command in a process of its own (-X importtime lists every module it imports)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONPROFILEIMPORTTIME": "1"}
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "provision", "--state-dir", str(tmp_path / "state"),
         "--grpc-address", "", *argv],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )  # fmt: skip


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if not line.startswith("import time:")]


def imported(result: subprocess.CompletedProcess[str]) -> list[str]:
    names = [line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    return [n for n in names if any(n == p or n.startswith(p + ".") for p in NEVER_ON_A_DEVICE)]


def test_a_device_provisions_itself_with_a_token(cloud: CloudService, tmp_path: Path) -> None:
    token = new_token(cloud, device_id="pi-01", labels={"site": "lab"})
    out = tmp_path / "etc" / "agent.toml"
    result = provision(tmp_path, "--token", token, "--cloud-url", str(cloud.api_url), "--device-id", "pi-01",
                       "--label", "site=elsewhere", "--label", "rack=7", "--out", str(out))
    assert result.returncode == 0, errors(result)
    assert imported(result) == [] and "edge_agent.enroll" in result.stderr  # the log is complete
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    settings = load_settings(out)
    assert settings.mqtt_url == cloud.mqtt_url and settings.mqtt_username == "pi-01"
    assert settings.labels == {"site": "lab", "rack": "7"}  # the operator's label wins
    assert settings.trust_path.read_bytes() == cloud.trust_chain_path.read_bytes()
    assert settings.read_trust().fleet == cloud.fleet
    assert settings.mqtt_password is not None
    with Session(cloud.engine) as session:
        credential = session.get(DeviceCredential, "pi-01")
        assert credential is not None
        assert verify_password(settings.mqtt_password.get_secret_value(), credential.password_hash)
        device = session.get(Device, "pi-01")
        assert device is not None and device.labels == {"site": "lab"}

    again = provision(tmp_path, "--token", token, "--cloud-url", str(cloud.api_url), "--device-id", "pi-01",
                      "--out", str(out), "--force")
    assert again.returncode == 2 and len(errors(again)) == 1 and "refused the enrollment token" in again.stderr


def test_an_existing_config_is_refused_before_the_token_is_spent(cloud: CloudService, tmp_path: Path) -> None:
    out = tmp_path / "agent.toml"
    out.write_text("# someone's config\n")
    token = new_token(cloud)
    result = provision(tmp_path, "--token", token, "--cloud-url", str(cloud.api_url), "--device-id", "pi-02",
                       "--out", str(out))
    assert result.returncode == 1 and "--force" in result.stderr and out.read_text() == "# someone's config\n"
    with Session(cloud.engine) as session:
        row = session.get(EnrollmentToken, token.split("_")[1])
        assert row is not None and row.used_at_ms is None


def test_an_unreachable_cloud_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = provision(tmp_path, "--token", "efe_x_y", "--cloud-url", f"http://127.0.0.1:{free_port()}",
                       "--device-id", "pi-03", "--out", str(tmp_path / "agent.toml"))
    assert result.returncode == 2 and len(errors(result)) == 1 and "cannot reach the cloud" in result.stderr
    assert not (tmp_path / "agent.toml").exists()


def test_a_chain_from_another_root_is_not_trusted(cloud: CloudService, tmp_path: Path) -> None:
    other = KeyStore(tmp_path / "other-keys")
    other.init("other-fleet")
    out = tmp_path / "agent.toml"
    result = provision(tmp_path, "--token", new_token(cloud), "--cloud-url", str(cloud.api_url),
                       "--device-id", "pi-04", "--trust", str(other.directory / "trust.chain"), "--out", str(out))
    assert result.returncode == 2 and "does not start from the root" in result.stderr and not out.exists()
    pinned = provision(tmp_path, "--token", new_token(cloud), "--cloud-url", str(cloud.api_url),
                       "--device-id", "pi-05", "--trust", str(cloud.trust_chain_path), "--out", str(out))
    assert pinned.returncode == 0, errors(pinned)
