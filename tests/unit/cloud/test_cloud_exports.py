"""Each cloud package's public surface is what its __all__ says, and all of it exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import cloud

# the sub-packages that re-export a public surface, and the names in them that are sub-modules
PACKAGES = {
    "cloud.api": {"app", "auth", "deps", "limits", "listen", "routes", "schemas", "throttle"},
    "cloud.db": {"bounds", "engine", "sql", "statuses", "tables"},
    "cloud.fleet": {"devices"},
    "cloud.monitoring": {"drift", "ingest", "summaries"},
    "cloud.registry": {"artifacts", "datasets", "keys", "runs", "versions"},
    "cloud.rollout": {
        "chunk_server", "deployer", "deployments", "director", "freshness", "plan", "refresher", "status",
    },
}


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_cloud_package_exports_are_complete(name: str) -> None:
    package = importlib.import_module(name)
    public = {n for n in vars(package) if not n.startswith("_")} - PACKAGES[name]
    assert set(package.__all__) == public
    assert all(getattr(package, n) is not None for n in package.__all__)


def test_every_cloud_package_says_what_it_owns() -> None:
    packages = [m.name for m in pkgutil.walk_packages(cloud.__path__, "cloud.") if m.ispkg]
    assert {"cloud.db", "cloud.registry", "cloud.fleet", "cloud.rollout", "cloud.monitoring", "cloud.mqtt"} <= set(
        packages
    )
    for name in packages:
        assert (importlib.import_module(name).__doc__ or "").strip(), f"{name} has no docstring"
