"""`pip install 'edgefleet[agent,tflite]'` on aarch64 gets the same runtimes as the aarch64 bundle."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from edge_agent.bundle import PINS

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def _requirements(machine: str, *extras: str) -> dict[str, str]:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    found = {}
    for extra in extras:
        for line in declared[extra]:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"platform_machine": machine}):
                found[req.name] = str(req.specifier)
    return found


@pytest.mark.parametrize("machine", ["aarch64", "x86_64"])
def test_the_extras_markers_agree_with_the_bundles_pins(machine: str) -> None:
    found = _requirements(machine, "agent", "tflite")
    for name, version in PINS[machine].items():
        assert found[name] == f"=={version}", (name, found)
    if machine == "x86_64":
        assert found["onnxruntime"].startswith(">=") and found["ai-edge-litert"].startswith(">=")


def test_agent_core_has_no_inference_runtime() -> None:
    core = _requirements("aarch64", "agent-core")
    assert "onnxruntime" not in core and "ai-edge-litert" not in core and "paho-mqtt" in core
