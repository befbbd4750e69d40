"""What needs re-signing at time t (pure): the refresher's decisions, without threads, clocks or I/O.

Signed statements expire so that a withheld or stolen one stops working; a device that does nothing
wrong must never meet an expired one, so the cloud re-signs well before expiry: when less than
`refresh_fraction` (a third) of a statement's lifetime is left. With the default lifetimes (90-day
manifests, 7-day assignments) that is 30 days and 56 hours ahead, so a cloud that is down for a weekend
still refreshes in time, and a device offline past expiry finds the refreshed assignment retained.

A manifest is also due when the key that signed it is no longer a targets key of the newest root (a
rotation or revocation); an assignment when its manifest was re-signed (its digest changed), when it was
signed under an older root version (the director key may be gone), or when there is none yet.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

DEFAULT_REFRESH_FRACTION = 1 / 3


@dataclass(frozen=True)
class FreshnessPolicy:
    assignment_valid_ms: int
    manifest_valid_ms: int
    refresh_fraction: float = DEFAULT_REFRESH_FRACTION

    def assignment_window_ms(self) -> int:
        return int(self.assignment_valid_ms * self.refresh_fraction)

    def manifest_window_ms(self) -> int:
        return int(self.manifest_valid_ms * self.refresh_fraction)


@dataclass(frozen=True)
class ManifestFacts:
    model_version_id: int
    key_id: str
    expires_at_ms: int  # 0: registered before manifests expired; give it an expiry


@dataclass(frozen=True)
class AssignmentFacts:
    device_id: str
    current_manifest_sha256: str  # the digest of the manifest its deployment's model version now has
    assigned_manifest_sha256: str | None  # None: no assignment recorded for the device
    expires_at_ms: int = 0
    root_version: int = 0


def manifests_due(
    manifests: Iterable[ManifestFacts], *, now_ms: int, policy: FreshnessPolicy, targets_key_ids: Collection[str]
) -> list[int]:
    """Model version ids whose manifest must be signed again now."""
    window = policy.manifest_window_ms()
    return [
        m.model_version_id
        for m in manifests
        if m.key_id not in targets_key_ids or not m.expires_at_ms or m.expires_at_ms - now_ms <= window
    ]


def assignments_due(
    assignments: Iterable[AssignmentFacts], *, now_ms: int, policy: FreshnessPolicy, root_version: int
) -> list[str]:
    """Device ids that must get a new assignment (next counter, same release) now."""
    window = policy.assignment_window_ms()
    return [
        a.device_id
        for a in assignments
        if a.assigned_manifest_sha256 is None
        or a.assigned_manifest_sha256 != a.current_manifest_sha256
        or a.root_version != root_version
        or a.expires_at_ms - now_ms <= window
    ]
