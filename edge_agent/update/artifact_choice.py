"""Which artifact of a manifest this device takes, and how to fetch it (pure).

The first runtime in the device's preference order that the manifest offers wins; among its artifacts one
already on disk (the active or previous model's bytes, re-signed under a newer sequence) needs no
download. Otherwise the desired state must say where the artifact's chunks are, consistently with the
manifest.
"""

from __future__ import annotations

from collections.abc import Iterable

from edge_agent.errors import MalformedPayloadError, NoCompatibleArtifactError
from protocols import trust
from protocols.chunking import ChunkLayout, ChunkLayoutError
from protocols.v1 import messages_pb2 as pb


def choose_artifact(
    manifest: pb.Manifest, desired: pb.DesiredState, runtimes: Iterable[str], on_disk: frozenset[str]
) -> tuple[pb.Artifact, ChunkLayout | None]:
    """(artifact, chunk layout), the layout None when the bytes are already on disk.

    Raises NoCompatibleArtifactError, MalformedPayloadError (no or inconsistent location) or
    trust.SizeMismatchError (the location and the manifest disagree on the size)."""
    runtimes = list(runtimes)
    usable = [a for r in runtimes for a in manifest.artifacts if a.runtime == r]
    if not usable:
        offered = sorted({a.runtime for a in manifest.artifacts})
        raise NoCompatibleArtifactError(
            f"manifest {manifest.model_id} v{manifest.version} offers runtimes {offered}, this device has {runtimes}"
        )
    for artifact in usable:
        if artifact.sha256 in on_disk:
            return artifact, None
    locations = {location.sha256: location for location in desired.artifacts}
    for artifact in usable:
        location = locations.get(artifact.sha256)
        if location is not None:
            return artifact, chunk_layout(artifact, location)
    raise MalformedPayloadError(f"desired state has no download location for artifact {usable[0].sha256}")


def chunk_layout(artifact: pb.Artifact, location: pb.ArtifactLocation) -> ChunkLayout:
    if location.size_bytes != artifact.size_bytes:
        raise trust.SizeMismatchError(
            f"artifact {artifact.name}: download location says {location.size_bytes} bytes, "
            f"manifest says {artifact.size_bytes}"
        )
    try:
        return ChunkLayout.from_location(location)
    except ChunkLayoutError as exc:
        raise MalformedPayloadError(f"artifact {artifact.name}: {exc}") from None
