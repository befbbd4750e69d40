"""The package's public surface: everything in __all__ resolves, lazily."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import edge_agent

ROOT = Path(edge_agent.__file__).resolve().parents[1]


def test_every_exported_name_resolves() -> None:
    for name in edge_agent.__all__:
        assert getattr(edge_agent, name) is not None, name
    assert "Agent" in edge_agent.__all__ and "AgentSettings" in edge_agent.__all__


def test_importing_the_transport_does_not_load_a_runtime() -> None:
    code = "import sys, edge_agent.transport; print('onnxruntime' in sys.modules, 'pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"]


def test_the_agent_never_imports_the_cloud_or_the_compiler() -> None:
    code = (
        "import sys, edge_agent.agent, edge_agent.cli, edge_agent.serving.grpc_server, edge_agent.connect;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('cloud', 'model_compiler', 'sklearn', 'fastapi', 'sqlmodel', 'pandas', 'pyarrow')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, cwd=ROOT)
    assert out.stdout.strip() == "[]"
