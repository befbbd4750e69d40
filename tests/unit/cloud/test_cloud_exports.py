"""The console API package's public surface is what its __all__ says, and all of it exists."""

from __future__ import annotations

import cloud.api


def test_cloud_api_exports_are_complete() -> None:
    public = {name for name in vars(cloud.api) if not name.startswith("_")} - {"app", "deps", "routes", "schemas"}
    assert set(cloud.api.__all__) == public
    assert all(getattr(cloud.api, name) is not None for name in cloud.api.__all__)
