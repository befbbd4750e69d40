"""The cloud's sampler hints on the device: the last accepted command kept on disk, and a hint read onto
the serving model's bins.

The last accepted SignedCommand is kept (`state_dir/last_command.bin`, its exact signed bytes, replaced
atomically) so that a restart keeps both the hint and the counter it was accepted at: an agent that forgot
them would take a replayed older hint, still unexpired, over the newer one, and would sample without the
cloud's hint until the cloud's next refresh. At start the bytes are verified again like a new command
(a root that rotated its director key since drops them: the cloud sends the hint again). A file that cannot
be read counts as no command, one that cannot be written is logged: the hint is then held in memory only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from edge_agent.serving.telemetry import FeatureBins
from protocols import commands, trust
from protocols.roots import RootOfTrust
from protocols.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)

COMMAND_FILE = "last_command.bin"  # in the agent's state_dir


class CommandKeeper:
    """The newest command this device accepted, and its counter (what a next one must exceed)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.counter = 0
        self.command: pb.Command | None = None

    def restore(self, root: RootOfTrust, device_id: str, now_ms: int) -> pb.Command | None:
        """The kept command if it still verifies and has not expired (its counter is kept either way)."""
        if self.path is None or not self.path.exists():
            return None
        try:
            signed = commands.parse_signed(self.path.read_bytes())
            self.counter = pb.Command.FromString(signed.command).counter
            command = commands.verify_command(signed, root, device_id=device_id, last_counter=self.counter - 1,
                                              now_ms=now_ms)  # fmt: skip
        except trust.ExpiredError:
            return None
        except (OSError, ValueError, trust.VerificationError) as exc:
            log.warning("kept command %s unusable (%s): none restored", self.path, exc)
            return None
        self.command = command
        return command

    def accept(self, signed: pb.SignedCommand, command: pb.Command) -> None:
        self.counter, self.command = command.counter, command
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(signed.SerializeToString())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not keep the command in %s: %s", self.path, exc)


def names_model(hint: pb.SamplerHint, ref: pb.ModelRef) -> bool:
    return hint.model.model_id == ref.model_id and hint.model.version == ref.version


def hint_mask(hint: pb.SamplerHint, bins: FeatureBins) -> tuple[np.ndarray, list[str]]:
    """The hinted bins as a flat mask over `bins` (as FeatureBins counts them), and what it could not place:
    a feature the profile does not bin, or a bin past the feature's last."""
    mask = np.zeros(bins.total, dtype=bool)
    where = {feature: i for i, feature in enumerate(bins.indexes)}
    bad = []
    for feature, k in zip(hint.features, hint.bins, strict=True):
        i = where.get(feature)
        if i is None:
            bad.append(f"feature {feature} (not binned by the model's profile)")
        elif k >= bins.sizes[i]:
            bad.append(f"bin {k} of feature {feature} (it has {bins.sizes[i]})")
        else:
            mask[bins.offsets[i] + k] = True
    return mask, bad
