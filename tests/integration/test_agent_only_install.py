"""`pip install '.[agent]'` gives a working agent with none of the cloud's packages.

A fresh virtualenv gets only the `agent` extra; the test checks that fastapi, sqlmodel, scikit-learn and
skl2onnx are absent, then provisions a device with that venv's `edgefleet-agent` (spending an enrollment
token, as a real device does) and runs
`edgefleet-agent run` against a real cloud stack, which deploys a model it must download, verify,
self-test and activate. The agent runs with `-X importtime` (PYTHONPROFILEIMPORTTIME) so the test can
prove that the device never imported `cloud` (which the checkout installs too) nor a cloud-only package.
"""

from __future__ import annotations

import os
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import wait_until

from cloud.cli.operator_token import ensure_dev_token
from cloud.db.tables import DeploymentCreate
from cloud.service import CloudService
from cloud.settings import CloudSettings
from cloud.training.pipeline import TrainingConfig, run_training_pipeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# pydantic: ~15 MB; pandas / pyarrow: the compiler reads DataFrames, a device builds inputs with numpy
CLOUD_ONLY = ("fastapi", "sqlmodel", "sklearn", "skl2onnx", "uvicorn", "amqtt", "pydantic", "pandas", "pyarrow")
NOT_NEEDED = ("grpc",)  # grpcio: the agent serves its gRPC API with grpclib, ~11 MB less resident
NEVER_ON_A_DEVICE = ("cloud", "model_compiler", *CLOUD_ONLY)
# every module the agent's command needs to run, imported eagerly (the CLI itself defers them)
AGENT_MODULES = (
    "edge_agent.cli", "edge_agent.agent", "edge_agent.config", "edge_agent.connect", "edge_agent.paho_transport",
    "edge_agent.serving.grpc_server", "edge_agent.serving.runtime", "edge_agent.serving.selftest",
)


def _forbidden(modules: list[str]) -> list[str]:
    """The modules in `modules` that belong to a package a device must never import."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in NEVER_ON_A_DEVICE))


def _imported(importtime_log: str) -> list[str]:
    """Module names from `-X importtime` lines: `import time: self | cumulative | <indent>name`."""
    return [line.rsplit("|", 1)[1].strip() for line in importtime_log.splitlines() if line.startswith("import time:")]


@pytest.fixture(scope="module")
def agent_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with `edgefleet[agent]` installed from this checkout (pip's cache makes it quick)."""
    home = tmp_path_factory.mktemp("agent-venv")
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{ROOT}[agent]"],
        capture_output=True, text=True, timeout=540,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return home


def test_the_agent_extra_installs_no_cloud_package(agent_venv: Path) -> None:
    python = agent_venv / "bin" / "python"
    probe = "import importlib.util as u, sys; print(','.join(m for m in sys.argv[1:] if u.find_spec(m)))"
    found = subprocess.run(
        [str(python), "-c", probe, *CLOUD_ONLY, *NOT_NEEDED], capture_output=True, text=True, timeout=60
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "", f"packages a device does not need in an agent-only install: {found.stdout}"
    for needed in ("paho", "onnxruntime", "grpclib", "cryptography", "google.protobuf"):
        check = subprocess.run([str(python), "-c", f"import {needed}"], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, f"{needed} missing from the agent extra: {check.stderr}"


def test_the_agent_modules_import_nothing_of_the_cloud(agent_venv: Path) -> None:
    python = agent_venv / "bin" / "python"
    probe = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]; print(' '.join(sys.modules))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run(
        [str(python), "-c", probe, *AGENT_MODULES], capture_output=True, text=True, timeout=120, env=env, cwd=agent_venv
    )
    assert found.returncode == 0, found.stderr
    modules = found.stdout.split()
    assert "edge_agent.paho_transport" in modules  # the probe did import the agent
    assert _forbidden(modules) == []


def test_the_agent_command_is_installed_and_answers(agent_venv: Path) -> None:
    helped = subprocess.run(
        [str(agent_venv / "bin" / "edgefleet-agent"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0, helped.stderr
    assert "provision" in helped.stdout and "run" in helped.stdout


@pytest.fixture
def cloud(mqtt_broker: Any, tmp_path: Path) -> Iterator[CloudService]:
    settings = CloudSettings(data_dir=tmp_path / "cloud", mqtt_url=mqtt_broker.url, api_port=0)
    with CloudService(settings) as service:
        yield service


def test_an_agent_only_install_runs_a_real_agent(
    agent_venv: Path, cloud: CloudService, mqtt_broker: Any, tmp_path: Path
) -> None:
    edgefleet_agent = str(agent_venv / "bin" / "edgefleet-agent")
    assert cloud.engine is not None
    found = ensure_dev_token(cloud.engine, cloud.settings.data_dir)  # as `edgefleet up` does in development
    assert found is not None
    headers = {"Authorization": f"Bearer {found[0].read_text().strip()}"}
    # what `edgefleet devices enroll --device-id pi-agent-only` asks the console API for
    created = httpx.post(f"{cloud.api_url}/api/v1/enrollment-tokens", json={"device_id": "pi-agent-only"},
                         headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    env = dict(os.environ)  # the agent's default protocol must work with Mosquitto and the embedded broker
    env.pop("PYTHONPATH", None)  # the agent must run from its own venv, not from this checkout's packages
    config = tmp_path / "device" / "agent.toml"
    provision = subprocess.run(
        [edgefleet_agent, "provision", "--token", created.json()["token"], "--cloud-url", str(cloud.api_url),
         "--device-id", "pi-agent-only", "--state-dir", str(tmp_path / "device" / "state"),
         "--grpc-address", "", "--out", str(config)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )
    assert provision.returncode == 0, provision.stdout + provision.stderr
    env["PYTHONPROFILEIMPORTTIME"] = "1"  # = -X importtime: every module the agent process imports, on stderr
    log, imports = tmp_path / "agent.log", tmp_path / "agent-imports.log"
    with log.open("w") as out, imports.open("w") as err:
        agent = subprocess.Popen(
            [edgefleet_agent, "run", "--config", str(config)], stdout=out, stderr=err, cwd=tmp_path, env=env
        )
    try:
        assert cloud.engine is not None and cloud.store is not None and cloud.signer is not None
        result = run_training_pipeline(cloud.engine, cloud.store, cloud.signer, TrainingConfig(model_id="digits"))
        cloud.deployer.deploy(DeploymentCreate(model_id="digits", device_ids=["pi-agent-only"]))  # type: ignore[union-attr]


        def device() -> dict[str, Any]:
            response = httpx.get(f"{cloud.api_url}/api/v1/devices/pi-agent-only", timeout=5, headers=headers)
            return response.json() if response.status_code == 200 else {}

        assert wait_until(lambda: device().get("update_state") == "active", timeout_s=60), (
            device(), log.read_text(), imports.read_text()[-3000:]
        )
        assert device()["active_version"] == result.version
        assert agent.poll() is None, log.read_text()
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, log.read_text() + imports.read_text()[-3000:]
    imported = _imported(imports.read_text())
    assert "edge_agent.agent" in imported and "edge_agent.paho_transport" in imported  # the log is complete
    assert _forbidden(imported) == [], "a device imported cloud code"


