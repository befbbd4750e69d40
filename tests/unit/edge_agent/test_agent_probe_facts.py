"""The runtime probe (a child process imports each runtime; the answer is cached per agent and runtime
version) and the device facts read from /proc, /sys and /etc."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from edge_agent.facts import FactsReader
from edge_agent.serving import probe


def _fake_onnxruntime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> Path:
    site = tmp_path / "site"
    (site / "onnxruntime").mkdir(parents=True)
    (site / "onnxruntime" / "__init__.py").write_text(source)
    monkeypatch.syspath_prepend(str(site))  # the parent finds it ...
    monkeypatch.setenv("PYTHONPATH", str(site))  # ... and so does the child that imports it
    monkeypatch.setattr(probe, "_MEMO", {})
    return site


def test_a_runtime_whose_import_segfaults_is_left_out_and_the_answer_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_onnxruntime(tmp_path, monkeypatch, "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    found = probe.probe_runtimes(tmp_path / "state", "0.1.0")
    assert [f.name for f in found] == ["tflite"] and found[0].version
    cache = json.loads((tmp_path / "state" / probe.CACHE_FILE).read_text())
    assert cache["onnxruntime"]["ok"] is False and "signal 11" in cache["onnxruntime"]["why"]
    # cached: a second start does not import again (a poisoned cache entry proves it is read)
    cache["tflite"]["version"] = "from-cache"
    (tmp_path / "state" / probe.CACHE_FILE).write_text(json.dumps(cache))
    monkeypatch.setattr(probe, "_MEMO", {})
    assert probe.probe_runtimes(tmp_path / "state", "0.1.0")[0].version == "from-cache"
    # another agent version probes again
    assert probe.probe_runtimes(tmp_path / "state", "0.2.0")[0].version != "from-cache"


def test_a_runtime_that_imports_is_advertised_with_its_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_onnxruntime(tmp_path, monkeypatch, "__version__ = '1.2.3-fake'\n")
    found = {f.name: f.version for f in probe.probe_runtimes(tmp_path / "state", "0.1.0")}
    assert found["onnxruntime"] == "1.2.3-fake" and "tflite" in found
    assert list(found) == ["onnxruntime", "tflite"]  # preference order


def test_facts_from_a_raspberry_pi_like_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('NAME="Debian GNU/Linux"\nPRETTY_NAME="Raspbian GNU/Linux 12 (bookworm)"\n')
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_text(
        "processor\t: 0\nCPU part\t: 0xd08\n\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    )
    (root / "proc/meminfo").write_text("MemTotal:        3884000 kB\nMemFree:  100 kB\nMemAvailable:    3000000 kB\n")
    for zone, milli in (("thermal_zone0", "48312"), ("thermal_zone1", "51500")):
        (root / "sys/class/thermal" / zone).mkdir(parents=True)
        (root / "sys/class/thermal" / zone / "temp").write_text(milli + "\n")
    facts = FactsReader(tmp_path, [("tflite", "2.3.0")], root=root).read()
    assert facts.os == "Raspbian GNU/Linux 12 (bookworm)"
    assert facts.cpu_model == "Raspberry Pi 4 Model B Rev 1.4"
    assert (facts.memory_total_bytes, facts.memory_available_bytes) == (3884000 * 1024, 3000000 * 1024)
    assert facts.HasField("temperature_c") and facts.temperature_c == pytest.approx(51.5)
    assert facts.architecture == platform.machine() and facts.python_version == platform.python_version()
    assert [(r.name, r.version) for r in facts.runtimes] == [("tflite", "2.3.0")]
    assert facts.cpu_count >= 1 and facts.disk_free_bytes > 0


def test_unreadable_facts_stay_unset(tmp_path: Path) -> None:
    facts = FactsReader(tmp_path / "missing", [], root=tmp_path / "nothing").read()
    assert facts.os == "" and facts.memory_total_bytes == 0 and not facts.HasField("temperature_c")
    assert facts.disk_free_bytes == 0 and facts.architecture  # platform.machine() is always there


def test_the_installed_version_is_read_from_the_dist_info_folder_beside_the_package(tmp_path: Path) -> None:
    """At every start, without importlib.metadata (what it imports stays resident for the agent's life)."""
    package = tmp_path / "site" / "ai_edge_litert"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (tmp_path / "site" / "ai_edge_litert_extra-9.9.dist-info").mkdir()  # another distribution, not ours
    (tmp_path / "site" / "AI_Edge_LiteRT-1.4.0.dist-info").mkdir()
    assert probe._installed_version("ai-edge-litert", str(package / "__init__.py")) == "1.4.0"
    assert probe._installed_version("ai-edge-litert", str(package)) == "1.4.0"  # a namespace package's folder
    # no dist-info folder: importlib.metadata says (here: not installed at all)
    assert probe._installed_version("no-such-dist-here", str(tmp_path / "site" / "x" / "__init__.py")) == ""
