"""A standard-library module imported on its first use rather than when a library imports it.

paho-mqtt imports `urllib.request` at import time (and with it http.client, email and their parsers: about
2.4 MB resident on x86) for one use: the proxy lookup at connect, made only where PySocks is installed (paho's
`proxy` extra; the agent's extras do not install it), so a device never needs the module.
`defer("urllib.request")` before paho is imported puts a stand-in in its place: the first
attribute read on it imports the real module, which then replaces the stand-in everywhere (sys.modules and
the package's attribute), so later readers get the real one directly.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

__all__ = ["defer"]

_load_lock = threading.Lock()


class _Deferred(types.ModuleType):
    """Stands in for a module not imported yet; any attribute read imports it."""

    def __getattr__(self, attr: str) -> Any:  # only for attributes the stand-in lacks: all of the module's
        return getattr(_load(self.__name__), attr)


def defer(name: str) -> None:
    """Import `name` (a standard-library submodule, e.g. "urllib.request") on its first use. Nothing to do
    if it is already imported."""
    if name in sys.modules:
        return
    parent, _, child = name.rpartition(".")
    stand_in = _Deferred(name)
    sys.modules[name] = stand_in
    if parent:  # `import urllib.request` binds `urllib`: readers reach the module through this attribute
        setattr(importlib.import_module(parent), child, stand_in)


def _load(name: str) -> types.ModuleType:
    with _load_lock:  # two first readers at once: one imports, the other then finds it imported
        if isinstance(sys.modules.get(name), _Deferred):
            del sys.modules[name]
        return importlib.import_module(name)  # also sets the parent package's attribute to the real module
