"""Which inference runtimes actually import here: each is imported once in a child process, so a wheel that
segfaults on import (seen on aarch64) is left out instead of being advertised from its presence alone.

The answer is cached in `state_dir/runtimes.json`, keyed by the agent version and the runtime's package
version and location, so a start costs a child process only after an install or upgrade.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_agent.config import AgentSettings
    from edge_agent.types import LoadModelFn, PrecheckFn

log = logging.getLogger(__name__)

CACHE_FILE = "runtimes.json"
PROBE_TIMEOUT_S = 120.0  # importing onnxruntime on a Pi Zero takes several seconds
# runtime name -> (module the adapter imports, distribution that ships it); in preference order
RUNTIMES = {"onnxruntime": ("onnxruntime", "onnxruntime"), "tflite": ("ai_edge_litert.interpreter", "ai-edge-litert")}

_MEMO: dict[str, dict[str, object]] = {}


@dataclass(frozen=True)
class RuntimeFound:
    name: str
    version: str


def real_runtimes(
    settings: AgentSettings, load_model: LoadModelFn | None, runtimes: list[str] | None, agent_version: str
) -> tuple[LoadModelFn, list[str], dict[str, str], PrecheckFn | None]:
    """What the agent uses when no runtime was plugged in: the real loader (checked in a child process
    first, unless disabled) and the runtimes that import, with their versions."""
    from edge_agent.serving import isolated, runtime

    precheck = None
    if load_model is None:
        load_model = runtime.load_model
        precheck = isolated.check_in_child if settings.isolate_loads else None
    versions: dict[str, str] = {}
    if runtimes is None:
        versions = {f.name: f.version for f in probe_runtimes(settings.state_dir, agent_version)}
        runtimes = list(versions)
    return load_model, runtimes, versions, precheck


def probe_runtimes(state_dir: Path, agent_version: str, timeout_s: float = PROBE_TIMEOUT_S) -> list[RuntimeFound]:
    """The runtimes whose import succeeds in a child process, in preference order (cached)."""
    cache_path = Path(state_dir) / CACHE_FILE
    cache = _read_cache(cache_path)
    found: list[RuntimeFound] = []
    fresh: dict[str, object] = {}
    for name, (module, dist) in RUNTIMES.items():
        key = _key(agent_version, module, dist)
        if key is None:
            continue  # not installed at all
        entry = cache.get(name)
        if not isinstance(entry, dict) or entry.get("key") != key:
            if key not in _MEMO:  # many agents in one process (the simulator) probe once
                _MEMO[key] = {"key": key, **_probe(module, dist, timeout_s)}
            entry = _MEMO[key]
        fresh[name] = entry
        if entry.get("ok"):
            found.append(RuntimeFound(name, str(entry.get("version", ""))))
        else:
            log.warning("runtime %s is installed but does not import: %s", name, entry.get("why", ""))
    if fresh != cache:
        _write_cache(cache_path, fresh)
    return found


def _key(agent_version: str, module: str, dist: str) -> str | None:
    top = module.partition(".")[0]
    try:
        spec = importlib.util.find_spec(top)  # finds the package without importing it
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    origin = spec.origin or (list(spec.submodule_search_locations or [""])[0])
    try:
        mtime = int(os.stat(origin).st_mtime) if origin else 0
    except OSError:
        mtime = 0
    return f"{agent_version}|{module}|{_installed_version(dist, origin)}|{origin}|{mtime}"


def _installed_version(dist: str, origin: str | None) -> str:
    """The version in the name of the `NAME-VERSION.dist-info` folder beside the package, read at every start:
    importlib.metadata would give the same string but costs the agent ~0.7 MB resident for as long as it runs
    (it imports zipfile, csv and email's parser), so it is only the fallback (egg or unusual layouts)."""
    if origin:
        package = Path(origin)
        site = package.parent.parent if package.name == "__init__.py" else package.parent
        name = dist.replace("-", "_").lower()
        try:
            with os.scandir(site) as entries:
                for entry in entries:
                    stem, _, suffix = entry.name.rpartition(".")
                    if suffix == "dist-info" and stem.lower().startswith(name + "-"):
                        return stem[len(name) + 1 :]
        except OSError:
            pass
    return _dist_version(dist)


def _dist_version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _probe(module: str, dist: str, timeout_s: float) -> dict[str, object]:
    top = module.partition(".")[0]
    code = f"import {module}, {top}; print(getattr({top}, '__version__', ''))"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "why": f"import took over {timeout_s:g} s"}
    except OSError:  # no child can run here (e.g. under qemu-user without binfmt): try it in this process
        try:
            imported = importlib.import_module(top)
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
            return {"ok": False, "why": f"import {module} failed: {exc}"}
        return {"ok": True, "version": str(getattr(imported, "__version__", "")) or _dist_version(dist)}
    if done.returncode != 0:
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return {"ok": False, "why": f"import {module} failed ({how}) {tail[0]}".strip()}
    return {"ok": True, "version": done.stdout.strip() or _dist_version(dist)}


def _read_cache(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict[str, object]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only state dir costs a probe per start, nothing more
        log.warning("cannot cache the runtime probe in %s: %s", path, exc)
