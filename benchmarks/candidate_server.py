"""One candidate source tree's cloud in a process of its own, for benchmarks that compare trees side by side
(console_flood.py, token_flood.py): `script` runs with the tree first on PYTHONPATH and prints one JSON line
with at least the API's `url` and an operator `token` once it serves; it stops when its stdin closes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def start(tree: Path, script: str, *args: str) -> tuple[subprocess.Popen[str], str, str]:
    """(the process, its API url, its operator token)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    server = subprocess.Popen([sys.executable, "-c", script, *args], cwd=tree, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert server.stdout is not None
    line = server.stdout.readline()  # bounded: the service starts or the process exits
    if not line:
        raise RuntimeError(f"the candidate in {tree} did not start (exit {server.wait(30)})")
    found = json.loads(line)
    return server, found["url"], found["token"]
