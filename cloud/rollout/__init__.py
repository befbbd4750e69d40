"""Rollout: putting a model version on devices and following it there.

`status` holds the pure rules (a target's status from a device's report, a deployment's status rolled up
from its targets'); `plan` decides who gets which desired state and writes it, uncommitted;
`deployments` reads deployment rows and moves them along as devices report; `director` signs each
device's assignment; `deployer` commits a plan and then publishes it (the one way to deploy);
`freshness` decides what needs re-signing and `refresher` does it on a thread; `fanout` publishes each
artifact's chunks once, retained, on the fleet-wide topics (and clears them when no longer needed);
`chunk_server` serves the chunks a device still lacks to entitled devices. `waves` (who goes in which
wave of a staged rollout, who is skipped and why) and `gates` (is a wave's new model at least as good as
the old one, on the fleet's telemetry) are the pure core of the staged-rollout controller; `policy` is
what an operator asks for, `staged` plans it, `figures` reads the telemetry the gates judge, `records`
holds its state and decisions, `progress` (pure) decides each step and `controller` takes the steps, on a
thread and for operators.
"""

from cloud.rollout.chunk_server import ChunkServer, ChunkStats
from cloud.rollout.controller import RolloutController
from cloud.rollout.deployer import Deployer, publish_desired
from cloud.rollout.deployments import (
    get_deployment,
    list_deployments,
    model_version_of,
    read_targets,
    record_report,
    refresh_status,
    target_counts,
    targets_of,
    waiting_reason,
    write_targets,
)
from cloud.rollout.director import Director
from cloud.rollout.fanout import FanoutPublisher, FanoutStats, FanoutSweeper
from cloud.rollout.freshness import AssignmentFacts, FreshnessPolicy, ManifestFacts, assignments_due, manifests_due
from cloud.rollout.plan import (
    STRATEGIES,
    Outgoing,
    artifact_location,
    open_label_deployments,
    plan_deployment,
    plan_for_new_devices,
    plan_reassign,
    plan_republish,
    resolve_targets,
)
from cloud.rollout.policy import GateRequest, RolloutPolicy
from cloud.rollout.refresher import Refresher, RefreshReport
from cloud.rollout.status import TERMINAL, roll_up, target_status_for

__all__ = [
    "STRATEGIES",
    "TERMINAL",
    "AssignmentFacts",
    "ChunkServer",
    "ChunkStats",
    "Deployer",
    "Director",
    "FanoutPublisher",
    "FanoutStats",
    "FanoutSweeper",
    "FreshnessPolicy",
    "GateRequest",
    "ManifestFacts",
    "Outgoing",
    "RefreshReport",
    "Refresher",
    "RolloutController",
    "RolloutPolicy",
    "artifact_location",
    "assignments_due",
    "get_deployment",
    "list_deployments",
    "manifests_due",
    "model_version_of",
    "open_label_deployments",
    "plan_deployment",
    "plan_for_new_devices",
    "plan_reassign",
    "plan_republish",
    "publish_desired",
    "read_targets",
    "record_report",
    "refresh_status",
    "resolve_targets",
    "roll_up",
    "target_counts",
    "target_status_for",
    "targets_of",
    "waiting_reason",
    "write_targets",
]
