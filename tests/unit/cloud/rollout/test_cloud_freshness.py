"""What needs re-signing at time t (cloud.rollout.freshness): pure decisions, no threads."""

from __future__ import annotations

from cloud.rollout.freshness import AssignmentFacts, FreshnessPolicy, ManifestFacts, assignments_due, manifests_due

DAY = 86_400_000
POLICY = FreshnessPolicy(assignment_valid_ms=7 * DAY, manifest_valid_ms=90 * DAY)
T = 1_800_000_000_000


def test_the_refresh_window_is_a_third_of_each_lifetime() -> None:
    assert POLICY.assignment_window_ms() == 7 * DAY // 3
    assert POLICY.manifest_window_ms() == 30 * DAY


def test_assignments_are_due_near_expiry_and_not_before() -> None:
    fresh = AssignmentFacts("fresh", "x", "x", expires_at_ms=T + 5 * DAY, root_version=1)
    near = AssignmentFacts("near", "x", "x", expires_at_ms=T + 2 * DAY, root_version=1)
    lapsed = AssignmentFacts("lapsed", "x", "x", expires_at_ms=T - DAY, root_version=1)  # device was offline
    assert assignments_due([fresh, near, lapsed], now_ms=T, policy=POLICY, root_version=1) == ["near", "lapsed"]


def test_assignments_are_due_for_a_resigned_manifest_a_new_root_or_none_yet() -> None:
    later = T + 6 * DAY
    facts = [
        AssignmentFacts("same", "x", "x", expires_at_ms=later, root_version=2),
        AssignmentFacts("resigned", "new", "old", expires_at_ms=later, root_version=2),
        AssignmentFacts("old-root", "x", "x", expires_at_ms=later, root_version=1),
        AssignmentFacts("never", "x", None),
    ]
    assert assignments_due(facts, now_ms=T, policy=POLICY, root_version=2) == ["resigned", "old-root", "never"]


def test_manifests_are_due_near_expiry_without_expiry_or_with_a_retired_key() -> None:
    facts = [
        ManifestFacts(1, "k1", T + 60 * DAY),
        ManifestFacts(2, "k1", T + 29 * DAY),
        ManifestFacts(3, "k1", 0),
        ManifestFacts(4, "k0", T + 80 * DAY),
    ]
    assert manifests_due(facts, now_ms=T, policy=POLICY, targets_key_ids={"k1"}) == [2, 3, 4]
