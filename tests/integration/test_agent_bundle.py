"""`edgefleet-agent bundle` makes a tarball that installs a working agent with no network.

Built for x86_64 (this machine) and installed with its own install.sh into a temp prefix, offline; the
aarch64 bundle's pins are checked here and the bundle is run on arm64 in test_arm64_agent.py.
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from support.bundles import build_and_unpack, offline_env

from edge_agent.bundle import BundleError, BundleSpec
from edge_agent.cli import main as agent_main
from edge_agent.config import field_names

pytestmark = pytest.mark.integration

HARDENING = ("User=edgefleet", "ProtectSystem=strict", "ReadWritePaths=/var/lib/edgefleet", "StateDirectory=edgefleet",
             "NoNewPrivileges=yes", "PrivateTmp=yes", "Restart=on-failure", "Type=notify", "WatchdogSec=")


@pytest.fixture(scope="module")
def x86_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_and_unpack("x86_64", "both", tmp_path_factory.mktemp("bundle-x86"))


def _wheels(bundle: Path) -> list[str]:
    return sorted(p.name for p in (bundle / "wheels").glob("*.whl"))


def test_the_bundle_holds_wheels_for_its_platform_and_its_support_files(x86_bundle: Path) -> None:
    for name in ("install.sh", "uninstall.sh", "edgefleet-agent.service", "agent.toml.example", "SHA256SUMS"):
        assert (x86_bundle / name).is_file(), name
    wheels = _wheels(x86_bundle)
    for needed in ("edgefleet-", "onnxruntime-", "ai_edge_litert-", "paho_mqtt-", "grpclib-", "h2-", "pip-"):
        assert any(w.startswith(needed) for w in wheels), (needed, wheels)
    foreign = [w for w in wheels if not (w.endswith("-none-any.whl") or "x86_64" in w)]
    assert foreign == []
    # grpcio: the agent serves gRPC with grpclib (~11 MB less resident); apps bring their own client
    assert not any(w.startswith(("scikit_learn", "fastapi", "sqlmodel", "skl2onnx", "grpcio")) for w in wheels)
    checked = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=x86_bundle, capture_output=True)
    assert checked.returncode == 0, checked.stdout


def test_the_unit_is_hardened_and_the_config_template_is_a_valid_config(x86_bundle: Path) -> None:
    unit = (x86_bundle / "edgefleet-agent.service").read_text()
    for directive in HARDENING:
        assert f"\n{directive}" in unit, directive
    template = tomllib.loads((x86_bundle / "agent.toml.example").read_text())
    assert set(template) <= set(field_names()), set(template) - set(field_names())


def test_install_sh_installs_a_working_agent_offline_and_uninstall_sh_removes_it(
    x86_bundle: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt-edgefleet"
    env = offline_env()
    installed = subprocess.run([str(x86_bundle / "install.sh"), "--prefix", str(prefix), "--no-systemd"],
                               capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    helped = subprocess.run([str(prefix / "venv" / "bin" / "edgefleet-agent"), "--help"],
                            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    assert "provision" in helped.stdout and "bundle" in helped.stdout
    probe = "import onnxruntime, ai_edge_litert.interpreter, edge_agent.agent; print(edge_agent.agent.__file__)"
    imported = subprocess.run([str(prefix / "venv" / "bin" / "python"), "-c", probe],
                              capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(str(prefix))  # the venv's own copy, not this checkout
    removed = subprocess.run([str(x86_bundle / "uninstall.sh"), "--prefix", str(prefix), "--no-systemd"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    assert not prefix.exists()


def test_install_sh_refuses_a_damaged_bundle(x86_bundle: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    subprocess.run(["cp", "-a", str(x86_bundle), str(damaged)], check=True)
    (damaged / "agent.toml.example").write_text("tampered = true\n")
    refused = subprocess.run([str(damaged / "install.sh"), "--prefix", str(tmp_path / "p"), "--no-systemd"],
                             capture_output=True, text=True, timeout=60, env=offline_env())  # fmt: skip
    assert refused.returncode != 0 and "SHA256SUMS" in refused.stderr
    assert not (tmp_path / "p").exists()


def test_the_aarch64_bundle_pins_runtimes_known_to_work_there(tmp_path: Path) -> None:
    wheels = _wheels(build_and_unpack("aarch64", "both", tmp_path))
    assert any(w.startswith("onnxruntime-1.27.0-") and "aarch64" in w for w in wheels), wheels
    assert any(w.startswith("ai_edge_litert-1.4.0-") and "aarch64" in w for w in wheels), wheels
    assert [w for w in wheels if not (w.endswith("-none-any.whl") or "aarch64" in w)] == []


def test_a_litert_only_bundle_has_no_onnxruntime(tmp_path: Path) -> None:
    wheels = _wheels(build_and_unpack("x86_64", "litert", tmp_path))
    assert any(w.startswith("ai_edge_litert-") for w in wheels)
    assert not any(w.startswith("onnxruntime-") for w in wheels)


def test_bad_targets_are_refused_before_any_download(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(BundleError):
        BundleSpec(arch="x86_64", python="2.7", runtime="onnx")
    assert agent_main(["bundle", "--arch", "x86_64", "--python", "three", "--out", str(tmp_path / "b.tgz")]) == 1
    assert "--python must look like 3.11" in capsys.readouterr().err
    assert not (tmp_path / "b.tgz").exists()
