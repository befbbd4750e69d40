"""One copy of each signed manifest per fleet: retained on `ef/v1/{fleet}/art/manifest/{sha256}`.

A device whose agent reports `manifest_by_digest` (`protocols.capabilities`) is sent a desired state
without the manifest (~10 KB of its ~11.5 KB); it reads the manifest its signed assignment names from
that content-addressed topic, which every device of the fleet may read and only the cloud may write
(`cloud.identity.acl`: the fleet's `art/#` subtree), and checks it as before: its bytes must hash to the
digest assigned, and a targets key must have signed them.

Publishing the same bytes again is harmless (the same retained message), so cloud processes need no claim:
each publishes a manifest the first time it sends a desired state naming it, and again after a broker lost
its retained messages. A manifest that cannot be published is sent inside the desired states as before.
Manifests stay retained (one message per release and signature, a few KB each): a device that reconnects
months later still finds the one it was assigned.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from cloud.rollout.fanout import publish_retained
from cloud.types import Publisher
from protocols.assignment import manifest_digest
from protocols.topics import manifest_topic
from protocols.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)


class ManifestPublisher:
    def __init__(self, publisher: Publisher, *, fleet: str) -> None:
        self.publisher = publisher
        self.fleet = fleet
        self.published = 0  # messages sent, for the service's stats
        self._retained: set[str] = set()  # digests this process has published since it (or the broker) started
        self._lock = threading.Lock()

    def offer(self, manifests: Iterable[pb.SignedManifest], *, again: bool = False) -> set[str]:
        """Make sure each manifest is retained on its fleet-wide topic; returns the digests that are.
        With again (a broker that lost its retained messages) publish each regardless."""
        ready: set[str] = set()
        for signed in manifests:
            digest = manifest_digest(signed)
            if digest in ready:
                continue
            with self._lock:
                known = digest in self._retained and not again
            if not known:
                try:
                    publish_retained(self.publisher, manifest_topic(digest, fleet=self.fleet),
                                     signed.SerializeToString())  # fmt: skip
                except Exception as exc:  # the desired states then carry this manifest themselves
                    log.error("could not publish manifest %s on its fleet-wide topic: %s", digest[:12], exc)
                    continue
                with self._lock:
                    self._retained.add(digest)
                    self.published += 1
                log.info("manifest %s retained on its fleet-wide topic", digest[:12])
            ready.add(digest)
        return ready
