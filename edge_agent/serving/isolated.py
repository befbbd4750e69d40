"""Load + self-test a new model in a child process before the agent loads it itself: a runtime that
segfaults (a broken wheel on aarch64, say) then kills the child, not the agent.

`check_in_child(artifact, data, io, self_test)` returns when the child loaded the model (a Python error in
the child is left for the in-process load to report with its usual code); it raises RuntimeCrashedError
when the child died of a signal. Run as `python -m edge_agent.serving.isolated` it is that child, reading the
artifact, model bytes, IO schema and self-test from its stdin (each a 4-byte big-endian length, then the bytes:
no temporary files, and no tempfile module kept resident in the agent after its first update).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from typing import BinaryIO

from edge_agent.errors import RuntimeCrashedError, RuntimeLoadError
from protocols.v1 import messages_pb2 as pb

CHILD_TIMEOUT_S = 300.0  # a Pi 3 takes seconds to import onnxruntime; a hang is not a crash
_PARTS = 4  # artifact, model bytes, io schema, self-test

log = logging.getLogger(__name__)


def check_in_child(
    artifact: pb.Artifact,
    data: bytes,
    io: pb.IoSchema,
    self_test: pb.SelfTest | None,
    timeout_s: float = CHILD_TIMEOUT_S,
) -> None:
    blobs = (
        artifact.SerializeToString(),
        data,
        io.SerializeToString(),
        (self_test or pb.SelfTest()).SerializeToString(),
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edge_agent.serving.isolated"],
            input=b"".join(len(blob).to_bytes(4, "big") + blob for blob in blobs),
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeLoadError(f"loading the {artifact.runtime} artifact took over {timeout_s:g} s") from None
    except OSError as exc:  # no child can run here (e.g. under qemu-user without binfmt): the journal's
        # load counter stays the defence against a crashing runtime
        log.warning("cannot start a child to test-load the model (%s); loading it in process", exc)
        return
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name if -done.returncode in signal.valid_signals() else "?"
        raise RuntimeCrashedError(
            f"loading the {artifact.runtime} artifact killed a child process with signal {name} ({-done.returncode})"
        )


def _read_parts(stream: BinaryIO) -> list[bytes]:
    parts = []
    for _ in range(_PARTS):
        size = int.from_bytes(stream.read(4), "big")
        parts.append(stream.read(size))
    return parts


def _child() -> int:
    from edge_agent.serving.runtime import load_model
    from edge_agent.serving.selftest import run_self_test

    raw = _read_parts(sys.stdin.buffer)
    artifact, io, self_test = (
        pb.Artifact.FromString(raw[0]),
        pb.IoSchema.FromString(raw[2]),
        pb.SelfTest.FromString(raw[3]),
    )
    model = load_model(artifact, raw[1], io)
    result = run_self_test(model, self_test, io)
    return 0 if result.passed else 3


if __name__ == "__main__":
    sys.exit(_child())
