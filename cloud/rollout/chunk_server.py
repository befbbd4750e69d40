"""The chunk server: answers ArtifactChunkRequests from devices with ArtifactChunks.

A device may fetch only artifacts of deployments that target it; it names chunks by index in the chunk
size its desired state announced (the deployment's `chunk_size_bytes`). Every index gets an answer, with
`error` set ("<code>: <why>", built by `protocols.codes.chunk_error`) when the chunk cannot be served,
so a device never waits on silence for a refusal. Payloads that do not parse are logged, counted, and
answered with an error on the device's data topic when the topic names a device. Requests of another
fleet are counted (`foreign`) and dropped unanswered: that fleet's cloud answers them. Where every cloud
process hears every request (no shared subscription), `owns` says which devices this one answers
(`cloud.mqtt.ownership`); the others' are counted (`not_mine`) and left to their owner.

Most chunks do not come this way any more: the deployer publishes each artifact once on the fleet-wide
topics (`cloud.rollout.fanout`), and devices ask here only for the chunks that did not reach them.

Error codes (`protocols.codes.ErrorCode`): malformed_request, device_mismatch, unknown_artifact,
not_entitled, bad_index, too_many_indexes, artifact_unavailable.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from cloud.db.tables import ArtifactRecord, Deployment, DeploymentTarget
from cloud.errors import CloudError
from cloud.mqtt.worker import BatchWorker, Counters, MessageConsumer
from cloud.registry.artifacts import ArtifactStore
from cloud.types import Publisher
from edge_agent.transport import TransportError
from protocols import SCHEMA_VERSION
from protocols.chunking import ChunkLayout
from protocols.codes import ErrorCode, chunk_error
from protocols.topics import DEFAULT_FLEET, Channel, TopicError, device_topic, parse_device_topic
from protocols.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_INDEXES_PER_REQUEST = 1024
PUBLISH_BACKOFF_S = 5.0


@dataclass
class ChunkStats(Counters):
    requests: int = 0
    chunks_sent: int = 0
    bytes_sent: int = 0
    errors_sent: int = 0
    malformed: int = 0
    foreign: int = 0
    not_mine: int = 0


class ChunkServer(MessageConsumer):
    def __init__(
        self,
        engine: Engine,
        store: ArtifactStore,
        publisher: Publisher,
        *,
        fleet: str = DEFAULT_FLEET,
        max_indexes: int = MAX_INDEXES_PER_REQUEST,
        cache_size: int = 4096,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.publisher = publisher
        self.fleet = fleet
        self.max_indexes = max_indexes
        self.owns = owns  # None: answer every device of the fleet (the broker splits them, or we are alone)
        self.stats = ChunkStats()
        # positive entitlements only: a granted (device, artifact) pair is never revoked
        self._cache: OrderedDict[tuple[str, str], ChunkLayout] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self.worker: BatchWorker[tuple[str, bytes]] = BatchWorker("edgefleet-chunks", self.handle_batch, batch_size=32)

    def handle_batch(self, messages: list[tuple[str, bytes]]) -> None:
        for topic, payload in messages:
            try:
                self.handle(topic, payload)
            except Exception:  # one bad request must not stop the others (nor the worker)
                log.exception("chunk request on %s failed", topic)

    def handle(self, topic: str, payload: bytes) -> None:
        self.stats.add(requests=1)
        try:
            parsed = parse_device_topic(topic)
        except TopicError as exc:
            self.stats.add(malformed=1)
            log.warning("artifact request on a topic that names no device: %s", exc)
            return
        if parsed.fleet != self.fleet:
            self.stats.add(foreign=1)
            return
        device_id = parsed.device_id
        if self.owns is not None and not self.owns(device_id):
            self.stats.add(not_mine=1)
            return
        try:
            request = pb.ArtifactChunkRequest.FromString(payload)
        except DecodeError as exc:
            self.stats.add(malformed=1)
            log.warning("malformed artifact request from %s: %s", device_id, exc)
            why = "payload is not an ArtifactChunkRequest"
            self._send_error(device_id, "", 0, "", ErrorCode.MALFORMED_REQUEST, why)
            return
        self.serve(device_id, request)

    def serve(self, device_id: str, request: pb.ArtifactChunkRequest) -> None:
        rid, sha = request.request_id, request.sha256
        if request.device_id and request.device_id != device_id:
            self.stats.add(malformed=1)
            why = f"request names {request.device_id!r}"
            return self._send_error(device_id, sha, 0, rid, ErrorCode.DEVICE_MISMATCH, why)
        if not _SHA256.match(sha):
            self.stats.add(malformed=1)
            return self._send_error(device_id, sha, 0, rid, ErrorCode.MALFORMED_REQUEST, "sha256 is not a hex digest")
        if not request.indexes:
            self.stats.add(malformed=1)
            return self._send_error(device_id, sha, 0, rid, ErrorCode.MALFORMED_REQUEST, "no chunk indexes")
        entitlement = self.entitlement(device_id, sha)
        if entitlement is None:
            code = ErrorCode.NOT_ENTITLED if self._known(sha) else ErrorCode.UNKNOWN_ARTIFACT
            log.warning("%s: device %s asked for artifact %s", code, device_id, sha)
            return self._send_error(device_id, sha, request.indexes[0], rid, code, f"artifact {sha[:12]}...")
        for position, index in enumerate(request.indexes):
            if position >= self.max_indexes:
                self._send_error(
                    device_id, sha, index, rid, ErrorCode.TOO_MANY_INDEXES, f"at most {self.max_indexes}",
                    entitlement.total_chunks,
                )
            else:
                self._send_chunk(device_id, sha, index, rid, entitlement)

    def entitlement(self, device_id: str, sha256: str) -> ChunkLayout | None:
        key = (device_id, sha256)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        query = (
            select(ArtifactRecord.size_bytes, Deployment.chunk_size_bytes)
            .join(Deployment, col(Deployment.model_version_id) == col(ArtifactRecord.model_version_id))
            .join(DeploymentTarget, col(DeploymentTarget.deployment_id) == col(Deployment.id))
            .where(DeploymentTarget.device_id == device_id, ArtifactRecord.sha256 == sha256)
            .order_by(col(Deployment.created_at_ms).desc())
        )
        with Session(self.engine) as session:
            row = session.exec(query).first()
        if row is None:
            return None
        found = ChunkLayout.of(sha256, int(row[0]), int(row[1]))
        with self._cache_lock:
            self._cache[key] = found
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return found

    def _known(self, sha256: str) -> bool:
        with Session(self.engine) as session:
            query = select(ArtifactRecord.sha256).where(ArtifactRecord.sha256 == sha256)
            return session.exec(query).first() is not None

    def _send_chunk(self, device_id: str, sha: str, index: int, rid: str, layout: ChunkLayout) -> None:
        total = layout.total_chunks
        if not layout.has(index):
            why = f"{index} not below {total}"
            return self._send_error(device_id, sha, index, rid, ErrorCode.BAD_INDEX, why, total)
        offset, expected = layout.offset(index), layout.length(index)
        try:
            data = self.store.read_chunk(sha, offset, layout.chunk_size)
        except CloudError as exc:
            data, reason = b"", str(exc)
        else:
            reason = f"read {len(data)} bytes, expected {expected}"
        if len(data) != expected:
            log.error("artifact %s chunk %d unavailable: %s", sha, index, reason)
            why = "try again later"
            return self._send_error(device_id, sha, index, rid, ErrorCode.ARTIFACT_UNAVAILABLE, why, total)
        chunk = pb.ArtifactChunk(
            schema_version=SCHEMA_VERSION, sha256=sha, index=index, total_chunks=total, offset=offset, data=data,
            request_id=rid,
        )
        self._publish(device_id, chunk)
        self.stats.add(chunks_sent=1, bytes_sent=len(data))

    def _send_error(
        self, device_id: str, sha: str, index: int, rid: str, code: ErrorCode, why: str, total: int = 0
    ) -> None:
        chunk = pb.ArtifactChunk(
            schema_version=SCHEMA_VERSION, sha256=sha, index=index, total_chunks=total, request_id=rid,
            error=chunk_error(code, why),
        )
        self._publish(device_id, chunk)
        self.stats.add(errors_sent=1)

    def _publish(self, device_id: str, chunk: pb.ArtifactChunk) -> None:
        spec = Channel.ARTIFACT_DATA.spec
        topic = device_topic(device_id, Channel.ARTIFACT_DATA, fleet=self.fleet)
        payload = chunk.SerializeToString()
        deadline = time.monotonic() + PUBLISH_BACKOFF_S
        while True:
            try:
                return self.publisher.publish(topic, payload, qos=spec.qos, retain=spec.retain)
            except TransportError:
                # the client's outgoing queue is full (a fleet-wide rollout): wait for it to drain a little
                # rather than drop the chunk; the device would time out and ask again, but later
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
