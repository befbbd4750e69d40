"""The model registry and ML metadata store: datasets (`datasets`), pipeline runs (`runs`), model versions
and their lineage (`versions`), the artifact bytes (`artifacts`) and the signing keys (`keys`).

Plain functions over a Session; they know nothing of HTTP or MQTT and leave committing to the caller.
The names below are the registry's public surface: callers write `registry.get_model_version(...)`.
"""

from cloud.registry.artifacts import ArtifactStore, LocalArtifactStore, MemoryArtifactStore, sha256_hex
from cloud.registry.datasets import content_hash, get_dataset, list_datasets, register_dataset
from cloud.registry.keys import KeyStore, load_or_create_keys
from cloud.registry.runs import finish_run, get_run, list_runs, record_step, start_run
from cloud.registry.versions import (
    artifacts_of,
    get_model_version,
    get_model_version_by_id,
    lineage,
    list_model_versions,
    list_models,
    lock_model_id,
    manifest_of,
    next_sequence,
    register_model_version,
    register_signed_model_version,
    resign_manifest,
    signed_manifest_of,
)

__all__ = [
    "ArtifactStore",
    "KeyStore",
    "LocalArtifactStore",
    "MemoryArtifactStore",
    "artifacts_of",
    "content_hash",
    "finish_run",
    "get_dataset",
    "get_model_version",
    "get_model_version_by_id",
    "get_run",
    "lineage",
    "list_datasets",
    "list_model_versions",
    "list_models",
    "list_runs",
    "load_or_create_keys",
    "lock_model_id",
    "manifest_of",
    "next_sequence",
    "record_step",
    "register_dataset",
    "register_model_version",
    "register_signed_model_version",
    "resign_manifest",
    "sha256_hex",
    "signed_manifest_of",
    "start_run",
]
