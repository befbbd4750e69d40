"""The bundle's wheel cache is shared by builds running at the same moment (several test runs on one CI
machine): neither may empty the other's download, and both get a complete wheelhouse.

`pip download` is stood in for by a function that writes one wheel and waits for the other build, so the
two downloads overlap every time (the real one needs the package index and takes minutes cold).
"""

from __future__ import annotations

import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edge_agent import bundle
from edge_agent.bundle import BundleSpec, download_dependencies


def _agent_wheel(directory: Path) -> Path:
    wheel = directory / "edgefleet-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("edgefleet-0.1.0.dist-info/METADATA", "Name: edgefleet\nRequires-Dist: paho-mqtt>=2.1\n")
    return wheel


def test_two_builds_downloading_at_once_both_get_the_whole_wheelhouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    both_downloading = threading.Barrier(2, timeout=10)

    def download(*args: str) -> None:
        dest = Path(args[args.index("--dest") + 1])
        both_downloading.wait()  # each build is mid-download here
        (dest / "paho_mqtt-2.1.0-py3-none-any.whl").write_bytes(b"wheel")
        both_downloading.wait()

    monkeypatch.setattr(bundle, "_pip", download)
    spec = BundleSpec(arch="x86_64", python="3.11", runtime="onnx")
    cache, agent_wheel = tmp_path / "cache", _agent_wheel(tmp_path)
    with ThreadPoolExecutor(2) as pool:
        houses = list(
            pool.map(lambda n: download_dependencies(spec, agent_wheel, tmp_path / f"deps{n}", cache), (0, 1))
        )
    for house in houses:
        assert (house / ".complete").is_file() and (house / "paho_mqtt-2.1.0-py3-none-any.whl").is_file(), house
    # one wheelhouse is published under its key; no download is left lying in the cache
    assert [p.name for p in cache.iterdir()] == [houses[0].name] == [houses[1].name]
    # the next build finds it without downloading
    monkeypatch.setattr(bundle, "_pip", lambda *args: pytest.fail(f"downloaded again: {args}"))
    assert download_dependencies(spec, agent_wheel, tmp_path / "deps2", cache) == houses[0]


def test_a_failed_download_leaves_nothing_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: str) -> None:
        raise bundle.BundleError("pip download failed: no such version")

    monkeypatch.setattr(bundle, "_pip", failing)
    cache = tmp_path / "cache"
    with pytest.raises(bundle.BundleError, match="no such version"):
        download_dependencies(
            BundleSpec(arch="x86_64", python="3.11", runtime="onnx"), _agent_wheel(tmp_path), tmp_path / "d", cache
        )
    assert list(cache.iterdir()) == []
