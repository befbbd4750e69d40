"""The x86_64 bundle's agent under a real systemd: Debian bookworm booted by systemd 252 in a container
(`systemd-nspawn --boot`, tests/support/systemd_container.py), the bundle installed there by its own
install.sh, the agent provisioned as its own user and started by `systemctl enable --now` with the bundle's
hardened unit (ProtectSystem=strict, no capabilities, ...), against a loopback Mosquitto on this host.

- Type=notify: the unit turns active only once the agent sent READY=1;
- the hardened agent writes its state dir (a model is downloaded, verified, swapped and reported), reads its
  config, opens its gRPC port (Predict from this host) and reaches the broker, as user edgefleet, with no
  capabilities and no_new_privs;
- WatchdogSec: a hung agent (SIGSTOP: no more WATCHDOG=1) is killed by systemd and started again;
- Restart=on-failure: an agent killed by SIGSEGV is started again, back on its model;
- uninstall.sh stops the agent and removes the unit and the venv.

The unit's timings are shortened by a drop-in (WatchdogSec=10 instead of 60, RestartSec=1). Without debootstrap
or systemd-nspawn (Debian's systemd-container) this skips, except under CI (CI=true), where it fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from support import free_port_for_restarts, wait_until
from support.bundles import build_and_unpack, cache_dir
from support.fake_cloud import FakeCloud
from support.releases import Release, make_keys
from support.systemd_container import Booted, missing_tools, systemd_root

from protocols.topics import Channel
from protocols.v1 import agent_pb2, agent_pb2_grpc
from protocols.v1 import messages_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.systemd, pytest.mark.timeout(1800)]

DEVICE = "pi-systemd-1"
UNIT = "edgefleet-agent.service"
DROP_IN = "[Service]\nWatchdogSec=10\nRestartSec=1\nTimeoutStopSec=10\n"


@pytest.fixture(scope="module")
def root() -> Path:
    missing = missing_tools()
    if missing:
        message = f"needs {', '.join(missing)} (apt-get install debootstrap systemd-container util-linux)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI the systemd test must run: {message}")
        pytest.skip(message)
    return systemd_root(cache_dir())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_and_unpack("x86_64", "onnx", tmp_path_factory.mktemp("bundle-systemd"))


@pytest.fixture(scope="module")
def release_parts() -> tuple[pb.Manifest, dict[str, bytes], np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    from model_compiler import compile_estimator

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 2] > 0).astype(np.int64)
    built = compile_estimator(LogisticRegression().fit(x[:200], y[:200]), x[200:], y[200:], target="onnx",
                              quantize="none")  # fmt: skip
    manifest = pb.Manifest()
    manifest.CopyFrom(built.fragment)
    manifest.model_id, manifest.version, manifest.sequence = "lr", "v1", 1
    manifest.created_at_ms = int(time.time() * 1000)
    return manifest, {b.artifact.sha256: b.data for b in built.artifacts}, x[200:210]


def _serving(cloud: FakeCloud, since: int = 0) -> bool:
    """The device reported v1 active in a report after the first `since` ones."""
    payloads = cloud.payloads(DEVICE, Channel.REPORTED)[since:]
    if not payloads:
        return False
    state = pb.ReportedState.FromString(payloads[-1])
    return state.update_state == pb.UPDATE_STATE_ACTIVE and state.active_model.version == "v1"


def _predict(port: int, rows: np.ndarray) -> agent_pb2.PredictResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = agent_pb2.PredictRequest(values=rows.reshape(-1).tolist(), rows=len(rows))
        return agent_pb2_grpc.EdgeInferenceStub(channel).Predict(request, timeout=30)


def _until(box: Booted, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    if not wait_until(condition, timeout_s=timeout_s):
        journal = box.run(["journalctl", "--no-pager", "-n", "80", "-u", UNIT], check=False).stdout
        unit = box.show(UNIT, "ActiveState", "SubState", "Result", "NRestarts", "MainPID")
        raise AssertionError(f"{what} (after {timeout_s:g} s); the unit: {unit}\n{journal}")


def _restarted_after(box: Booted, old_pid: str, restarts: int) -> Callable[[], bool]:
    def check() -> bool:
        unit = box.show(UNIT, "ActiveState", "MainPID", "NRestarts")
        return (unit["ActiveState"] == "active" and unit["MainPID"] not in ("0", old_pid)
                and int(unit["NRestarts"]) > restarts)  # fmt: skip

    return check


def test_the_bundled_agent_runs_hardened_under_systemd(
    root: Path, bundle: Path, release_parts: Any, tmp_path: Path, mqtt_broker: Any, make_transport: Any
) -> None:
    manifest, artifacts, rows = release_parts
    keys = make_keys(tmp_path / "keys")
    release = Release(keys.signer.sign(manifest), manifest, artifacts, keys)
    transport, _ = make_transport()
    cloud = FakeCloud(transport, chunk_size=4096, start=False)
    port = free_port_for_restarts()  # the watchdog's restart binds it again
    binds = {bundle: "/bundle", keys.trust_path.parent: "/trust"}
    with Booted(root, tmp_path / "container.log", binds) as box:
        installed = box.run(["/bundle/install.sh"], timeout=600)
        assert "installed edgefleet-agent" in installed.stdout, installed.stdout + installed.stderr
        box.run(["runuser", "-u", "edgefleet", "--", "edgefleet-agent", "provision", "--device-id", DEVICE,
                 "--mqtt-url", mqtt_broker.url, "--trust", f"/trust/{keys.trust_path.name}",
                 "--state-dir", "/var/lib/edgefleet", "--out", "/etc/edgefleet/agent.toml",
                 "--grpc-address", f"127.0.0.1:{port}"])  # fmt: skip
        box.run(["mkdir", "-p", f"/etc/systemd/system/{UNIT}.d"])
        box.run(["tee", f"/etc/systemd/system/{UNIT}.d/test-timings.conf"], stdin=DROP_IN)
        box.run(["systemctl", "daemon-reload"])
        box.run(["systemctl", "enable", "--now", UNIT], timeout=120)  # Type=notify: returns once READY=1 came

        unit = box.show(UNIT, "ActiveState", "SubState", "MainPID", "User", "WatchdogUSec", "NRestarts")
        assert (unit["ActiveState"], unit["SubState"], unit["User"]) == ("active", "running", "edgefleet"), unit
        assert unit["WatchdogUSec"] == "10s", unit
        pid = unit["MainPID"]
        status = dict(line.split(":", 1) for line in box.run(["cat", f"/proc/{pid}/status"]).stdout.splitlines())
        uid = box.run(["id", "-u", "edgefleet"]).stdout.strip()
        assert status["Uid"].split()[0] == uid != "0", status["Uid"]
        assert status["CapEff"].strip() == "0000000000000000" and status["NoNewPrivs"].strip() == "1", status

        # the hardened agent downloads, verifies, swaps and reports a model (state dir, broker), serves it (port)
        cloud.deploy(DEVICE, release, generation=1)
        _until(box, lambda: _serving(cloud), 180, "the agent under systemd did not report v1 active")
        assert len(_predict(port, rows).labels) == len(rows)
        owners = box.run(["find", "/var/lib/edgefleet", "-mindepth", "1", "!", "-user", "edgefleet"]).stdout
        assert owners == "", owners

        # a hung agent sends no more WATCHDOG=1: systemd kills it (SIGABRT, then SIGKILL) and starts it again
        box.run(["systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", UNIT])
        _until(box, _restarted_after(box, pid, 0), 60, "the watchdog did not restart a hung agent")
        journal = box.run(["journalctl", "--no-pager", "-u", UNIT]).stdout
        assert "Watchdog timeout" in journal, journal[-3000:]

        # Restart=on-failure: a crashed agent comes back, on its model
        unit = box.show(UNIT, "MainPID", "NRestarts")
        reports = len(cloud.payloads(DEVICE, Channel.REPORTED))
        box.run(["systemctl", "kill", "--kill-whom=main", "--signal=SIGSEGV", UNIT])
        _until(box, _restarted_after(box, unit["MainPID"], int(unit["NRestarts"])), 60, "a crashed agent stayed down")
        _until(box, lambda: _serving(cloud, since=reports), 120, "the restarted agent did not report v1 active")
        assert len(_predict(port, rows).labels) == len(rows)

        # uninstall.sh stops it and removes the unit and the venv
        removed = box.run(["/bundle/uninstall.sh"], timeout=120)
        assert "removed the EdgeFleet agent" in removed.stdout, removed.stdout + removed.stderr
        assert box.show(UNIT, "LoadState", "ActiveState") == {"LoadState": "not-found", "ActiveState": "inactive"}
        assert box.run(["find", "/proc", "-maxdepth", "1", "-user", "edgefleet"]).stdout == ""  # no process of its
        assert box.run(["test", "-e", "/opt/edgefleet"], check=False).returncode == 1
        with pytest.raises(grpc.RpcError):
            _predict(port, rows)
