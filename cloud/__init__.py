"""EdgeFleet cloud: registry, pipelines, rollout, ingestion, drift and the console.

Kept import-light: `cloud.cli` is the entry point of every `edgefleet` command, including the
device-side ones, so nothing heavy is imported here.
"""
