"""What the agent imports stays small: paho's urllib.request (with http.client and email, ~2.4 MB) is imported
on first use, not with paho, and still works for whoever uses it (edge_agent.deferred); tempfile and shutil
(with bz2 and lzma, ~1.2 MB) are not imported at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT)}, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_mqtt_transport_does_not_import_urllib_request_http_or_email() -> None:
    loaded = _run(
        "import sys, edge_agent.connect, paho.mqtt.client\n"
        "print(sorted(m for m in ('urllib.request', 'http.client', 'email.message', 'email.parser')"
        " if type(sys.modules.get(m)).__name__ == 'module'))"
    )
    assert loaded == "[]"


def test_urllib_request_works_for_its_first_users_after_it_was_deferred() -> None:
    out = _run(
        "import sys, edge_agent.paho_transport\n"
        "import urllib.request\n"
        "from urllib.request import Request\n"  # a from-import: the real class
        "assert Request.__module__ == 'urllib.request', Request\n"
        "assert urllib.request.getproxies() is not None\n"  # as paho reads it (websocket proxies)
        "assert sys.modules['urllib.request'] is urllib.request and type(urllib.request).__name__ == 'module'\n"
        "import edge_agent.enroll\n"  # the agent's own user of it
        "print(urllib.request.Request('http://example.invalid/x').host)"
    )
    assert out == "example.invalid"


def test_the_agent_imports_neither_tempfile_nor_shutil() -> None:
    loaded = _run(
        "import sys\n"
        "from edge_agent.agent import Agent\n"
        "from edge_agent.connect import transport_for\n"
        "from edge_agent.serving.grpc_server import start_grpc_server\n"
        "from edge_agent.facts import FactsReader\n"
        "import edge_agent.cli\n"
        "print(sorted(m for m in ('tempfile', 'shutil', 'bz2', 'lzma') if m in sys.modules))"
    )
    assert loaded == "[]"
