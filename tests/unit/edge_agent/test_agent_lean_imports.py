"""What the agent imports stays small: paho's urllib.request (with http.client and email, ~2.4 MB) is imported
on first use, not with paho, and still works for whoever uses it (edge_agent.deferred); tempfile and shutil
(with bz2 and lzma, ~1.2 MB) are not imported at all, not even by the command line (argparse imports shutil
for its width) or an update's load check in a child process; `edgefleet-agent run` hashes without OpenSSL."""

from __future__ import annotations

import io
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


def test_the_agent_command_line_does_not_import_shutil() -> None:
    loaded = _run(
        "import sys\n"
        "from edge_agent.cli import build_parser\n"
        "args = build_parser().parse_args(['run', '--config', 'agent.toml'])\n"
        "assert args.config.name == 'agent.toml'\n"
        "print(sorted(m for m in ('tempfile', 'shutil', 'bz2', 'lzma') if m in sys.modules))"
    )
    assert loaded == "[]"


def test_a_load_check_in_a_child_leaves_no_tempfile_behind() -> None:
    """The child gets the model over its stdin: it loads it (here: fails to, a Python error the in-process load
    reports) and the agent imports nothing for temporary files."""
    out = _run(
        "import sys\n"
        "from edge_agent.serving.isolated import check_in_child\n"
        "from protocols.v1 import messages_pb2 as pb\n"
        "artifact = pb.Artifact(name='m.onnx', runtime='onnxruntime', format=pb.ARTIFACT_FORMAT_ONNX)\n"
        "print(check_in_child(artifact, b'not a model', pb.IoSchema(n_features=4), None))\n"
        "print(sorted(m for m in ('tempfile', 'shutil') if m in sys.modules))"
    )
    assert out.splitlines() == ["None", "[]"]


def test_the_child_reads_what_the_agent_sends() -> None:
    from edge_agent.serving.isolated import _read_parts

    blobs = [b"artifact", b"\x00" * 70_000, b"", b"self-test"]
    stream = io.BytesIO(b"".join(len(blob).to_bytes(4, "big") + blob for blob in blobs))
    assert _read_parts(stream) == blobs


def test_run_hashes_without_openssl() -> None:
    """use_builtin_hashes (as `edgefleet-agent run` calls it) keeps OpenSSL's _hashlib out; hashlib still works."""
    out = _run(
        "import sys\n"
        "from edge_agent.resources import use_builtin_hashes\n"
        "assert use_builtin_hashes()\n"
        "import edge_agent.agent, edge_agent.connect, hashlib\n"
        "assert type(sys.modules.get('_hashlib')).__name__ != 'module'\n"
        "print(hashlib.sha256(b'abc').hexdigest()[:16])"
    )
    assert out == "ba7816bf8f01cfea"
