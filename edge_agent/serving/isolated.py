"""Load + self-test a new model in a child process before the agent loads it itself: a runtime that
segfaults (a broken wheel on aarch64, say) then kills the child, not the agent.

`check_in_child(artifact, data, io, self_test)` returns when the child loaded the model (a Python error in
the child is left for the in-process load to report with its usual code); it raises RuntimeCrashedError
when the child died of a signal. Run as `python -m edge_agent.serving.isolated DIR` it is that child.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

from edge_agent.errors import RuntimeCrashedError, RuntimeLoadError
from protocols.v1 import messages_pb2 as pb

CHILD_TIMEOUT_S = 300.0  # a Pi 3 takes seconds to import onnxruntime; a hang is not a crash
_FILES = ("artifact.pb", "model.bin", "io.pb", "self_test.pb")

log = logging.getLogger(__name__)


def check_in_child(
    artifact: pb.Artifact,
    data: bytes,
    io: pb.IoSchema,
    self_test: pb.SelfTest | None,
    timeout_s: float = CHILD_TIMEOUT_S,
) -> None:
    import tempfile  # here: only an update's load check needs it, and an idle agent need not hold it (~0.8 MB)

    with tempfile.TemporaryDirectory(prefix="edgefleet-load-") as tmp:
        blobs = (
            artifact.SerializeToString(),
            data,
            io.SerializeToString(),
            (self_test or pb.SelfTest()).SerializeToString(),
        )
        for name, blob in zip(_FILES, blobs, strict=True):
            (Path(tmp) / name).write_bytes(blob)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "edge_agent.serving.isolated", tmp],
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


def _child(directory: str) -> int:
    from edge_agent.serving.runtime import load_model
    from edge_agent.serving.selftest import run_self_test

    raw = [(Path(directory) / name).read_bytes() for name in _FILES]
    artifact, io, self_test = (
        pb.Artifact.FromString(raw[0]),
        pb.IoSchema.FromString(raw[2]),
        pb.SelfTest.FromString(raw[3]),
    )
    model = load_model(artifact, raw[1], io)
    result = run_self_test(model, self_test, io)
    return 0 if result.passed else 3


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
