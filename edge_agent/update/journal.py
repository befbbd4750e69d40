"""The journal: everything the agent must remember across a restart or a power cut (pure data + codec).

It is saved (atomically, by the store) before each step of an update that cannot be undone, so that on
start the agent serves the active model at once and resumes, or abandons, an update in progress.
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from protocols.chunking import ChunkLayout
from protocols.v1 import messages_pb2 as pb

JOURNAL_VERSION = 1


class Outcome(StrEnum):
    """How the last desired state ended; what a restart reports while no update runs."""

    IDLE = "idle"  # no desired state handled (yet, or it was cleared)
    ACTIVE = "active"  # desired state reached
    FAILED = "failed"  # desired state refused; the previous model kept serving


@dataclass(frozen=True)
class InstalledModel:
    """A verified model on disk: the signed manifest exactly as received, and which artifact of it."""

    signed_manifest: bytes  # serialized pb.SignedManifest
    artifact_sha256: str

    def manifest(self) -> pb.Manifest:
        """The manifest, parsed once per instance (an update asks for it a dozen times): read it, never
        change it, as every caller shares it."""
        parsed = self.__dict__.get("_manifest")
        if parsed is None:
            parsed = pb.Manifest.FromString(pb.SignedManifest.FromString(self.signed_manifest).manifest)
            object.__setattr__(self, "_manifest", parsed)  # a cache, not a field: eq, hash and replace() ignore it
        return parsed

    def artifact(self) -> pb.Artifact:
        return artifact_of(self.manifest(), self.artifact_sha256)

    def ref(self) -> pb.ModelRef:
        manifest = self.manifest()
        artifact = artifact_of(manifest, self.artifact_sha256)
        return pb.ModelRef(
            model_id=manifest.model_id,
            version=manifest.version,
            sequence=manifest.sequence,
            artifact_sha256=self.artifact_sha256,
            runtime=artifact.runtime,
        )


def artifact_of(manifest: pb.Manifest, sha256: str) -> pb.Artifact:
    for artifact in manifest.artifacts:
        if artifact.sha256 == sha256:
            return artifact
    raise KeyError(f"manifest {manifest.model_id} has no artifact {sha256}")


@dataclass(frozen=True)
class PendingUpdate:
    """An update in progress: the manifest is verified, the artifact chosen; layout None = already on disk."""

    generation: int
    deployment_id: str
    target: InstalledModel
    layout: ChunkLayout | None
    # loads started (journalled before each): one still set at start means the load killed the process
    load_attempts: int = 0
    desired: bytes = b""  # the verified DesiredState: another artifact of it is the fallback after a crash
    # the chunks from the fleet-wide topics made an artifact whose digest is wrong: fetch it all per device
    fanout_failed: bool = False


@dataclass(frozen=True)
class LastError:
    code: str
    message: str


@dataclass(frozen=True)
class Probation:
    """The active model is on probation until `until_ms` (wall clock: it survives a restart); `restarts`
    counts the agent's starts since it was activated (a crash loop rolls it back)."""

    until_ms: int
    restarts: int = 0


@dataclass(frozen=True)
class Restoring:
    """A model being loaded at start (journalled before the load, cleared after): still set at the next
    start means that load killed the process; `attempts` counts such starts in a row."""

    artifact_sha256: str
    attempts: int


@dataclass(frozen=True)
class Journal:
    active: InstalledModel | None = None
    previous: InstalledModel | None = None
    desired_generation: int = 0  # the counter of the last signed assignment that ended (see outcome)
    root: bytes = b""  # TrustChain of the root versions followed since provisioning (b"": none yet)
    deployment_id: str = ""
    outcome: Outcome = Outcome.IDLE
    last_error: LastError | None = None
    pending: PendingUpdate | None = None
    boot_count: int = 0  # bumped on every start; the high half of every seq the agent sends
    probation: Probation | None = None  # the active model is on probation; `previous` is what it rolls back to
    crashed_runtimes: frozenset[str] = frozenset()  # runtimes whose load killed the agent: not chosen again ...
    # ... while the agent and the runtime are the versions they were then: runtime -> stamp (update.crash_marks)
    crash_stamps: dict[str, str] = field(default_factory=dict)
    restoring: Restoring | None = None
    # "<counter>:<sha256>" of the last desired state that verified: its re-delivery is not checked again
    verified_desired: str = ""

    def with_(self, **changes: Any) -> Journal:
        return replace(self, **changes)

    def models_on_disk(self) -> frozenset[str]:
        return frozenset(m.artifact_sha256 for m in (self.active, self.previous) if m is not None)


# ---------------------------------------------------------------------------------------------- codec


@functools.lru_cache(maxsize=64)
def _b64(data: bytes) -> str:
    # memoized: a journal is encoded several times per update around the same signed manifests and desired
    # state (a few KB each), and a simulator's devices in one process hold equal bytes
    return base64.b64encode(data).decode("ascii")


def _model_from_dict(data: dict[str, Any] | None) -> InstalledModel | None:
    if data is None:
        return None
    return InstalledModel(base64.b64decode(data["signed_manifest"]), str(data["artifact_sha256"]))


def _model_json(model: InstalledModel | None) -> bytes:
    if model is None:
        return b"null"
    return _installed_json(model.signed_manifest, model.artifact_sha256)


@functools.lru_cache(maxsize=64)
def _installed_json(signed_manifest: bytes, artifact_sha256: str) -> bytes:
    # memoized as _b64 is: a model's ~14 KB of base64 manifest were most of every save's encoding (the C
    # encoder escapes each character), and a simulator's devices in one process share these bytes
    doc = {"artifact_sha256": artifact_sha256, "signed_manifest": _b64(signed_manifest)}
    return json.dumps(doc).encode()


def _with_models(models: dict[str, bytes], rest: dict[str, Any]) -> bytes:
    """A JSON object of the already-encoded models (first) and the rest (json's C encoder, sorted keys): one
    concatenation instead of escaping the models' base64 text again."""
    parts = [b"{"]
    for key, value in models.items():
        parts += (b'"', key.encode(), b'": ', value, b", ")
    if rest:
        parts.append(json.dumps(rest, sort_keys=True).encode()[1:])
    else:  # no ", " after the last model (or "{}": nothing at all)
        parts[-1] = b"}" if models else b"{}"
    return b"".join(parts)


def encode_journal(journal: Journal) -> bytes:
    """The journal as JSON: an object of its fields (models as {signed_manifest, artifact_sha256})."""
    pending = journal.pending
    pending_json = b"null"
    if pending is not None:
        pending_json = _with_models(
            {"target": _model_json(pending.target)},
            {
                "generation": pending.generation,
                "deployment_id": pending.deployment_id,
                "layout": None if pending.layout is None else vars(pending.layout),
                "load_attempts": pending.load_attempts,
                "desired": _b64(pending.desired),
                "fanout_failed": pending.fanout_failed,
            },
        )
    doc: dict[str, Any] = {
        "version": JOURNAL_VERSION,
        "desired_generation": journal.desired_generation,
        "root": _b64(journal.root),
        "deployment_id": journal.deployment_id,
        "outcome": journal.outcome.value,
        "last_error": None
        if journal.last_error is None
        else {"code": journal.last_error.code, "message": journal.last_error.message},
        "boot_count": journal.boot_count,
        "probation": None
        if journal.probation is None
        else {"until_ms": journal.probation.until_ms, "restarts": journal.probation.restarts},
        "crashed_runtimes": sorted(journal.crashed_runtimes),
        "crash_stamps": dict(journal.crash_stamps),
        "verified_desired": journal.verified_desired,
        "restoring": None
        if journal.restoring is None
        else {"artifact_sha256": journal.restoring.artifact_sha256, "attempts": journal.restoring.attempts},
    }
    # no indent: json's C encoder only serves indent=None (the pure-Python one took twice as long)
    models = {"active": _model_json(journal.active), "previous": _model_json(journal.previous)}
    return _with_models({**models, "pending": pending_json}, doc)


def decode_journal(data: bytes) -> Journal:
    """Parse a journal; raise ValueError (with the reason) for anything that is not one."""
    try:
        doc = json.loads(data)
        if doc.get("version") != JOURNAL_VERSION:
            raise ValueError(f"unsupported journal version {doc.get('version')!r}")
        pending_doc = doc["pending"]
        pending = None
        if pending_doc is not None:
            layout = pending_doc["layout"]
            target = _model_from_dict(pending_doc["target"])
            assert target is not None
            pending = PendingUpdate(
                generation=int(pending_doc["generation"]),
                deployment_id=str(pending_doc["deployment_id"]),
                target=target,
                layout=None if layout is None else ChunkLayout(**layout),
                load_attempts=int(pending_doc.get("load_attempts", 0)),
                desired=base64.b64decode(pending_doc.get("desired", "")),
                fanout_failed=bool(pending_doc.get("fanout_failed", False)),
            )
        error = doc["last_error"]
        probation = doc.get("probation")
        restoring = doc.get("restoring")
        return Journal(
            active=_model_from_dict(doc["active"]),
            previous=_model_from_dict(doc["previous"]),
            desired_generation=int(doc["desired_generation"]),
            root=base64.b64decode(doc.get("root", "")),
            deployment_id=str(doc["deployment_id"]),
            outcome=Outcome(doc["outcome"]),
            last_error=None if error is None else LastError(str(error["code"]), str(error["message"])),
            pending=pending,
            boot_count=int(doc.get("boot_count", 0)),
            probation=None
            if probation is None
            else Probation(int(probation["until_ms"]), int(probation.get("restarts", 0))),
            crashed_runtimes=frozenset(str(r) for r in doc.get("crashed_runtimes", [])),
            crash_stamps={str(k): str(v) for k, v in doc.get("crash_stamps", {}).items()},
            verified_desired=str(doc.get("verified_desired", "")),
            restoring=None
            if restoring is None
            else Restoring(str(restoring["artifact_sha256"]), int(restoring["attempts"])),
        )
    except (KeyError, TypeError, AssertionError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a valid journal: {exc!r}") from None
