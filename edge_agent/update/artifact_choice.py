"""Which artifact of a manifest this device takes, and how to fetch it (pure).

The first runtime in the device's preference order that the manifest offers wins; among its artifacts one
already on disk (the active or previous model's bytes, re-signed under a newer sequence) needs no
download. Otherwise the desired state must say where the artifact's chunks are, consistently with the
manifest. A location may also name the fleet-wide topics where the cloud keeps the chunks retained
(`fanout_filter`); it is used only when it is exactly the filter the layout and the fleet give.
"""

from __future__ import annotations

from collections.abc import Iterable

from edge_agent.errors import MalformedPayloadError, NoCompatibleArtifactError
from protocols import trust
from protocols.chunking import ChunkLayout, ChunkLayoutError
from protocols.topics import TopicError, artifact_chunk_filter
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


def fanout_filter(desired: pb.DesiredState, layout: ChunkLayout, fleet: str) -> str | None:
    """The topic filter of the layout's fleet-wide chunks, if the desired state offers them; None otherwise
    (an older cloud, or a filter that is not the one content addressing gives: never follow another)."""
    try:
        expected = artifact_chunk_filter(layout.sha256, layout.chunk_size, fleet=fleet)
    except TopicError:
        return None
    for location in desired.artifacts:
        if location.sha256 == layout.sha256 and location.fanout_filter == expected:
            return expected
    return None
