"""`edgefleet-agent bundle`: one offline tarball that installs the agent on a device with no network.

The tarball holds a wheelhouse for the target (platform, CPython version), made with `pip download
--only-binary=:all: --platform ...` so it can be built on any machine, the agent's own wheel, the install
and uninstall scripts, a hardened systemd unit and a config template. Runtimes are pinned per architecture
to releases known to work there (see PINS).
"""

from __future__ import annotations

import email.parser
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

ARCHES = ("aarch64", "x86_64")
RUNTIMES = ("onnx", "litert", "both")
# The extras each runtime choice installs (agent-core: the agent without any inference runtime).
EXTRAS = {"onnx": "agent", "litert": "agent-core,tflite", "both": "agent,tflite"}
# Known-good releases per architecture. `pip download --platform` evaluates environment markers against
# the machine it runs on, not the target, so pyproject's aarch64 markers are applied here as constraints.
# aarch64: onnxruntime 1.28+ segfaults on import under qemu-user 7.2 (untested on a real Pi); ai-edge-litert
# 1.4.0 is the newest release with aarch64 Linux wheels.
PINS: dict[str, dict[str, str]] = {
    "aarch64": {"onnxruntime": "1.27.0", "ai-edge-litert": "1.4.0"},
    "x86_64": {},
}
# glibc baselines: Debian bookworm / Raspberry Pi OS 12 have glibc 2.36, so anything up to 2_28 runs there.
_PLATFORM_TAGS = ("manylinux2014_{arch}", "manylinux_2_17_{arch}", "manylinux_2_28_{arch}")
_PACKAGES = ("cloud", "edge_agent", "model_compiler", "protocols", "simulator")
_FILES = ("install.sh", "uninstall.sh", "edgefleet-agent.service", "agent.toml.example")


class BundleError(RuntimeError):
    """The bundle cannot be built; the message says why (pip's output included)."""


@dataclass(frozen=True)
class BundleSpec:
    arch: str
    python: str  # "3.11"
    runtime: str

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise BundleError(f"--arch must be one of {', '.join(ARCHES)}, not {self.arch!r}")
        if self.runtime not in RUNTIMES:
            raise BundleError(f"--runtime must be one of {', '.join(RUNTIMES)}, not {self.runtime!r}")
        major, _, minor = self.python.partition(".")
        if not (major == "3" and minor.isdigit()):
            raise BundleError(f"--python must look like 3.11, not {self.python!r}")

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def name(self) -> str:
        return f"edgefleet-agent-{self.arch}-{self.abi}-{self.runtime}"


def checkout_root() -> Path | None:
    """The EdgeFleet checkout this module runs from, if it runs from one (the agent wheel is built from it)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "edge_agent").is_dir() else None


def build_bundle(spec: BundleSpec, out: Path, *, source: Path, wheel_cache: Path | None = None) -> Path:
    """Write the tarball `out` for `spec` from the checkout `source`; returns `out`."""
    with tempfile.TemporaryDirectory(prefix="edgefleet-bundle-") as tmp:
        stage = Path(tmp) / spec.name
        wheels = stage / "wheels"
        wheels.mkdir(parents=True)
        agent_wheel = build_agent_wheel(source, wheels)
        version = agent_wheel.name.split("-")[1]
        deps = download_dependencies(spec, agent_wheel, Path(tmp) / "deps", wheel_cache)
        for wheel in deps.iterdir():
            if wheel.suffix == ".whl":
                shutil.copy2(wheel, wheels / wheel.name)
        _write_support_files(stage, spec, version)
        _write_checksums(stage)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w:gz") as tar:
            tar.add(stage, arcname=spec.name)
    return out


def build_agent_wheel(source: Path, into: Path) -> Path:
    """`pip wheel --no-deps` of a clean copy of the checkout (the build would litter the checkout otherwise)."""
    with tempfile.TemporaryDirectory(prefix="edgefleet-src-") as tmp:
        copy = Path(tmp)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(source / name, copy / name)
        for package in _PACKAGES:
            if (source / package).is_dir():
                shutil.copytree(source / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
        # no build isolation when setuptools is here already: the build then needs no index either
        isolation = ["--no-build-isolation"] if _has_setuptools() else []
        _pip("wheel", "--no-deps", *isolation, "--wheel-dir", str(into), str(copy))
    built = sorted(into.glob("edgefleet-*.whl"))
    if len(built) != 1:
        raise BundleError(f"expected one edgefleet wheel in {into}, found {[p.name for p in built]}")
    return built[0]


def download_dependencies(spec: BundleSpec, agent_wheel: Path, into: Path, cache: Path | None) -> Path:
    """The wheelhouse for the agent's dependencies on the target; reused from `cache` when its inputs match."""
    key = _cache_key(spec, agent_wheel)
    target = (cache / f"{spec.name}-{key}") if cache is not None else into
    if (target / ".complete").is_file():
        return target
    # Each build downloads into a directory of its own: builds sharing the cache at the same moment (test
    # runs on one CI machine) must not empty each other's downloads, nor a wheelhouse another is copying.
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    constraints = partial / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in PINS[spec.arch].items()))
    platforms = [arg for tag in _PLATFORM_TAGS for arg in ("--platform", tag.format(arch=spec.arch))]
    try:
        _pip(
            "download", "--only-binary=:all:", *platforms, "--python-version", spec.python, "--implementation", "cp",
            "--abi", spec.abi, "--abi", "abi3", "--abi", "none", "--constraint", str(constraints),
            "--dest", str(partial), f"{agent_wheel}[{EXTRAS[spec.runtime]}]", "pip",
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for stray in partial.glob("edgefleet-*.whl"):  # the agent's own wheel is built fresh each time
        stray.unlink()
    (partial / ".complete").write_text(key + "\n")
    if cache is None:
        return partial
    try:
        partial.rename(target)  # atomic: others see the whole wheelhouse or none
        return target
    except OSError:  # the name is taken: another build published the same wheelhouse first
        pass
    if not (target / ".complete").is_file():
        return partial  # a stray directory holds the name: use this build's own download
    shutil.rmtree(partial, ignore_errors=True)
    return target


def _cache_key(spec: BundleSpec, agent_wheel: Path) -> str:
    """A hash of what decides the wheelhouse: target, pins and the agent's declared dependencies."""
    with zipfile.ZipFile(agent_wheel) as wheel:
        metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        parsed = email.parser.Parser().parsestr(wheel.read(metadata).decode())
    inputs = {
        "spec": [spec.arch, spec.python, spec.runtime],
        "pins": PINS[spec.arch],
        "platforms": _PLATFORM_TAGS,
        "requires": sorted(parsed.get_all("Requires-Dist") or []),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _write_support_files(stage: Path, spec: BundleSpec, version: str) -> None:
    files = resources.files("edge_agent.bundle_files")
    values = {"@VERSION@": version, "@EXTRAS@": EXTRAS[spec.runtime], "@PYTHON@": spec.python, "@ARCH@": spec.arch}
    for name in _FILES:
        text = files.joinpath(name).read_text()
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        path = stage / name
        path.write_text(text)
        path.chmod(0o755 if name.endswith(".sh") else 0o644)


def _write_checksums(stage: Path) -> None:
    """SHA256SUMS in `sha256sum -c` format: install.sh refuses a bundle damaged in the copy."""
    lines = io.StringIO()
    for path in sorted(p for p in stage.rglob("*") if p.is_file()):
        lines.write(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(stage)}\n")
    (stage / "SHA256SUMS").write_text(lines.getvalue())


def _has_setuptools() -> bool:
    import importlib.util

    return importlib.util.find_spec("setuptools") is not None


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise BundleError(f"pip {args[0]} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
