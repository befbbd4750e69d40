"""The whole cloud stack in one process: what `edgefleet up` runs until interrupted.

Start order: database (tables created), artifact store, key store (development creates missing keys; the
fleet is the one its root metadata names), MQTT broker (embedded unless `mqtt_url` names one; it reads
device credentials from the database and needs the fleet for its ACL), then one MQTT connection shared
by ingestion and the chunk server (the trust chain published retained on every connect), the refresher
thread, then the console API on uvicorn in a thread. `stop()` undoes it in reverse. Several
`CloudService`s may run against the same broker and database (give them a `share_group`): each has its
own MQTT client id, and everything they share lives in the database.
The MQTT session is persistent (a stable client id per worker, `cloud.mqtt.client_id`; clean_start off,
QoS 1 subscriptions), so what devices send while the cloud or the broker restarts waits in the broker.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlmodel import Session

from cloud import registry
from cloud.api import AppServices, create_app
from cloud.api.listen import listen_socket
from cloud.db import create_tables, make_engine, session_scope
from cloud.db.tables import ModelVersion
from cloud.errors import BrokerStartError, ConfigurationError
from cloud.monitoring import Ingestor
from cloud.monitoring.alert_monitor import AlertMonitor
from cloud.monitoring.alerts import AlertPolicy
from cloud.monitoring.hints import SamplerHinter
from cloud.monitoring.webhook import WebhookSender
from cloud.mqtt.client_id import ClientIdLease, lease_client_id
from cloud.mqtt.ownership import Ownership
from cloud.mqtt.router import MessageRouter
from cloud.periodic import Periodic
from cloud.registry import KeyStore, LocalArtifactStore, load_or_create_keys
from cloud.registry.keys import CHAIN_FILE
from cloud.rollout import ChunkServer, Deployer, Director, FreshnessPolicy, Refresher, RolloutController
from cloud.rollout.fanout import FanoutPublisher, FanoutSweeper
from cloud.rollout.manifests import ManifestPublisher
from cloud.settings import CloudSettings
from protocols.signing import Signer
from protocols.v1 import messages_pb2 as pb

if TYPE_CHECKING:
    from cloud.api.processes import ApiProcesses, ApiRole

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 15.0


class CloudService:
    def __init__(self, settings: CloudSettings | None = None, *, api_role: ApiRole | None = None) -> None:
        """api_role: this is one of the core's API processes (cloud.api.processes), not the core."""
        self.settings = settings or CloudSettings()
        self.api_role = api_role
        self.api_processes: ApiProcesses | None = None
        self.broker: Any = None  # cloud.mqtt.broker.EmbeddedBroker when we run one
        self.engine: Engine | None = None
        self.store: LocalArtifactStore | None = None
        self.keys: KeyStore | None = None
        self.transport: Any = None  # cloud.mqtt.bulk_client.CloudTransport
        self.client_lease: ClientIdLease | None = None
        self.deployer: Deployer | None = None
        self.ingestor: Ingestor | None = None
        self.chunk_server: ChunkServer | None = None
        self.fanout: FanoutPublisher | None = None
        self.sweeper: FanoutSweeper | None = None
        self.ownership: Ownership | None = None
        self.refresher: Periodic | None = None  # a Refresher; in an API process a KeyFollower
        self.rollouts: RolloutController | None = None
        self.autoretrain: Periodic | None = None
        self.alerts: AlertMonitor | None = None
        self.mqtt_url: str | None = None
        self.mqtt_protocol = "5"
        self.api_url: str | None = None
        self._server: Any = None  # uvicorn.Server
        self._server_thread: threading.Thread | None = None
        self.router: MessageRouter | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> CloudService:
        if self.api_role is not None:
            return self._start_api_process()
        s = self.settings
        try:
            s.data_dir.mkdir(parents=True, exist_ok=True)
            self.engine = make_engine(s.database)
            create_tables(self.engine)
            assert s.artifacts_dir is not None
            self.store = LocalArtifactStore(s.artifacts_dir)
            self.keys = load_or_create_keys(s)
            self._start_broker()
            self._start_messaging()
            self._start_refresher()
            assert self.deployer is not None
            self.rollouts = RolloutController(self.deployer, interval_s=s.rollout_tick_s,
                                              promote_on_canary=s.promote_on_canary).start()
            assert self.ingestor is not None
            self.ingestor.on_stored = self.rollouts.wake  # gates judge once their telemetry is stored
            self.rollouts.on_watch = self.ingestor.watch  # ...and the open waves' windows are stored first
            if s.retrain_check_s > 0:
                from cloud.training.autoretrain import AutoRetrainer

                self.autoretrain = AutoRetrainer(self.engine, self.store, self._auto_retrain,
                                                 interval_s=s.retrain_check_s).start()  # fmt: skip
            self._start_alerts()
            self._start_api()
        except BaseException:
            self.stop()
            raise
        log.info("EdgeFleet cloud up: API %s, MQTT %s", self.api_url, self.mqtt_url)
        return self

    def _start_api_process(self) -> CloudService:
        """The api role: what the console API needs and nothing that ingests, ticks or brokers."""
        role, s = self.api_role, self.settings
        assert role is not None
        try:
            self.engine = make_engine(s.database)  # the core made the tables
            assert s.artifacts_dir is not None
            self.store = LocalArtifactStore(s.artifacts_dir)
            self.keys = load_or_create_keys(s)
            self.mqtt_url, self.mqtt_protocol = role.mqtt_url, role.mqtt_protocol
            self._start_publisher(clean_start=True)  # no subscriptions: the core hears the devices
            assert self.deployer is not None
            # steps when an operator acts; the core's controller ticks (steps are claimed in the database)
            self.rollouts = RolloutController(self.deployer, interval_s=s.rollout_tick_s,
                                              promote_on_canary=s.promote_on_canary)  # fmt: skip
            from cloud.rollout.refresher import KeyFollower

            self.refresher = KeyFollower(self.deployer, self.keys, interval_s=s.refresh_interval_s).start()
            self._serve_api(role.sock)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.api_processes is not None:
            self.api_processes.stop()
            self.api_processes = None
        if self._server is not None:
            self._server.should_exit = True
            if self._server_thread is not None:
                self._server_thread.join(10)
            self._server = self._server_thread = None
        for periodic in (self.refresher, self.rollouts, self.sweeper, self.ownership, self.autoretrain, self.alerts):
            if periodic is not None:
                periodic.stop()
        self.refresher = self.rollouts = self.sweeper = self.ownership = self.autoretrain = self.alerts = None
        if self.transport is not None:
            self.transport.stop()
            self.transport = None
        if self.client_lease is not None:
            self.client_lease.release()
            self.client_lease = None
        for worker in (self.ingestor, self.chunk_server):
            if worker is not None:
                worker.stop()
        self.ingestor = self.chunk_server = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> CloudService:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what callers use once started ----------------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A database session that commits on success."""
        assert self.engine is not None, "start() first"
        with session_scope(self.engine) as session:
            yield session

    def register_model_version(
        self, manifest: pb.Manifest, artifacts: Mapping[str, bytes], *, run_id: str | None = None
    ) -> ModelVersion:
        """Sign and store a model version with this service's signer and artifact store (committed)."""
        assert self.store is not None, "start() first"
        with self.session() as session:
            mv = registry.register_model_version(
                session, manifest, artifacts, store=self.store, signer=self.signer, run_id=run_id,
                valid_days=self.settings.manifest_valid_days,
            )
            session.flush()
            session.expunge(mv)
        return mv

    def retrain(self, model_id: str, *, trigger: Any, actor: str, policy: Any = None, targets: list[str] | None = None,
                **options: Any) -> Any:  # fmt: skip
        """A champion/challenger retrain (`cloud.training.retrain`) with this service's store, signer and
        deployer; a winner's canary goes to the devices running the model (or `targets`)."""
        from cloud.training import retrain as loop

        assert self.engine is not None and self.store is not None and self.deployer is not None, "start() first"
        deployer = self.deployer
        if targets is None:
            with self.session() as session:
                targets = loop.devices_running(session, model_id)
        return loop.retrain(
            self.engine, self.store, self.signer, model_id, trigger=trigger, actor=actor, targets=targets,
            policy=policy or loop.RetrainPolicy(manifest_valid_days=self.settings.manifest_valid_days),
            deploy=lambda request, staged: deployer.deploy(request, staged=staged), **options,
        )

    def _auto_retrain(self, model_id: str, **options: Any) -> Any:
        from cloud.training import retrain as loop

        policy = loop.RetrainPolicy(on_win=self.settings.retrain_on_win,
                                    manifest_valid_days=self.settings.manifest_valid_days)  # fmt: skip
        return self.retrain(model_id, policy=policy, **options)

    def status(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "mqtt_url": self.mqtt_url,
            "mqtt_connected": bool(self.transport and self.transport.connected),
            "ingest": self.ingestor.stats.snapshot() if self.ingestor else None,
            "chunks": self.chunk_server.stats.snapshot() if self.chunk_server else None,
            "fanout": self.fanout.stats.snapshot() if self.fanout else None,
            "manifests_published": self.deployer.manifests.published if self.deployer and self.deployer.manifests
            else 0,
            "shared_subscriptions": bool(self.router and self.router.shared),
            "chunk_request_members": list(self.ownership.members) if self.ownership else [],
        }

    @property
    def signer(self) -> Signer:
        """The manifest signer: read from the key store each time, so a rotated targets key is used at once."""
        assert self.keys is not None, "start() first"
        return self.keys.manifest_signer()

    @property
    def fleet(self) -> str:
        assert self.keys is not None, "start() first"
        return self.keys.fleet

    @property
    def trust_chain_path(self) -> Path:
        """The TrustChain file devices pin at provisioning."""
        assert self.settings.keys_dir is not None
        return self.settings.keys_dir / CHAIN_FILE

    # -- parts ------------------------------------------------------------------------------------------------

    def _forget_presence(self) -> None:
        """Our broker starts empty: no device is connected to it yet, whatever the database last heard."""
        from cloud.fleet import mark_all_offline

        assert self.engine is not None
        with session_scope(self.engine) as session:
            was_online = mark_all_offline(session)
        if was_online:
            log.info("embedded broker started: %d device(s) offline until they reconnect", was_online)

    def _start_broker(self) -> None:
        if not self.settings.uses_embedded_broker:
            self.mqtt_url = self.settings.mqtt_url
            return
        from cloud.mqtt.broker import EmbeddedBroker  # amqtt only when the broker is ours
        from cloud.mqtt.broker_auth import BrokerAuthority, cloud_password

        s = self.settings
        authority = None
        if s.embedded_broker_auth:
            assert self.engine is not None and self.keys is not None
            authority = BrokerAuthority(self.engine, self.keys.fleet, cloud_password(s.data_dir))
        port = s.embedded_mqtt_port
        try:
            self.broker = EmbeddedBroker(
                s.embedded_mqtt_host, port, authority=authority, recheck_s=s.embedded_broker_recheck_s
            ).start()
        except BrokerStartError as exc:
            hint = f"; is another broker on port {port}? use it with --mqtt-url mqtt://127.0.0.1:{port}" if port else ""
            raise ConfigurationError(f"{exc}{hint}") from None
        # the cloud's own client reaches it on loopback even when it listens on every address
        self._forget_presence()
        wildcard = s.embedded_mqtt_host in ("0.0.0.0", "::", "")
        self.mqtt_url = f"mqtt://127.0.0.1:{self.broker.port}" if wildcard else self.broker.url
        self.mqtt_protocol = self.broker.mqtt_protocol

    def _start_messaging(self) -> None:
        s = self.settings
        self._start_publisher(clean_start=False)  # the broker keeps our subscriptions and queues while we are away
        assert self.engine is not None and self.store is not None and self.keys is not None
        assert self.client_lease is not None and self.deployer is not None and self.transport is not None
        fleet = self.deployer.director.fleet
        self.ingestor = Ingestor(
            self.engine, deployer=self.deployer, batch_size=s.ingest_batch_size, max_queue=s.ingest_queue_max
        )
        # where every process hears every chunk request (no shared subscription), the live ones split devices
        self.ownership = Ownership(self.engine, fleet=fleet, member_id=self.client_lease.client_id).start()
        self.chunk_server = ChunkServer(self.engine, self.store, self.transport, fleet=fleet, owns=self._answers)
        self.router = MessageRouter(
            self.ingestor.submit, self.chunk_server.submit, fleet=fleet, share_group=s.share_group
        )
        self.router.attach(self.transport)
        self.transport.set_connect_handler(self._on_connect)
        self.ingestor.start()
        self.chunk_server.start()
        self.transport.start()
        if self.fanout is not None:
            self.sweeper = FanoutSweeper(self.fanout, interval_s=s.fanout_sweep_interval_s).start()
        if not self.transport.wait_connected(_START_TIMEOUT_S):
            # not fatal: the transport keeps reconnecting, and ingestion starts when the broker is back
            log.warning("MQTT broker %s not reachable yet (%s); retrying", self.mqtt_url, self.transport.last_error)

    def _start_publisher(self, *, clean_start: bool) -> None:
        """The MQTT connection (under a leased client id) and the deployer that publishes on it; an API process
        starts it here, the core in _start_messaging, which subscribes it before connecting."""
        from cloud.mqtt.bulk_client import CloudTransport

        s = self.settings
        assert self.engine is not None and self.store is not None and self.mqtt_url is not None
        assert self.keys is not None
        username, password = self._mqtt_credentials()
        worker_name, client_id = s.worker_name, s.mqtt_client_id
        if self.api_role is not None:  # a client id of its own beside the core's
            from cloud.mqtt.client_id import default_worker_name

            worker_name = f"{worker_name or default_worker_name(s.data_dir)}-api{self.api_role.index}"
            client_id = None if client_id is None else f"{client_id}-api{self.api_role.index}"
        self.client_lease = lease_client_id(s.data_dir, self.keys.fleet, worker_name=worker_name, client_id=client_id)
        self.transport = CloudTransport(
            self.mqtt_url,
            self.client_lease.client_id,
            clean_start=clean_start,
            session_expiry_s=s.mqtt_session_expiry_s,
            reconnect_max_s=s.mqtt_reconnect_max_s,
            username=username,
            password=password,
            tls_ca=str(s.mqtt_tls_ca) if s.mqtt_tls_ca else None,
            protocol=self.mqtt_protocol,  # type: ignore[arg-type]
            max_queued=s.mqtt_max_queued,
            queue_full_wait_s=s.mqtt_queue_full_wait_s,
        )
        director = Director.from_keys(self.keys, assignment_valid_s=s.assignment_valid_s)
        if s.artifact_fanout:
            self.fanout = FanoutPublisher(self.engine, self.store, self.transport, fleet=director.fleet)
        manifests = ManifestPublisher(self.transport, fleet=director.fleet) if s.manifest_by_digest else None
        self.deployer = Deployer(self.engine, self.transport, director=director, chunk_size_bytes=s.chunk_size_bytes,
                                 fanout=self.fanout, manifests=manifests)  # fmt: skip
        if self.api_role is not None:
            self.transport.start()
            if not self.transport.wait_connected(_START_TIMEOUT_S):
                log.warning("MQTT broker %s not reachable yet (%s); retrying", self.mqtt_url, self.transport.last_error)

    def _mqtt_credentials(self) -> tuple[str | None, str | None]:
        """The cloud's broker user: its own on an embedded broker that checks (see cloud.mqtt.broker_auth)."""
        s = self.settings
        if self.api_role is not None:
            return self.api_role.mqtt_credentials
        if self.broker is not None and self.broker.authority is not None:
            from cloud.identity.acl import CLOUD_USER
            from cloud.mqtt.broker_auth import cloud_password

            return CLOUD_USER, cloud_password(s.data_dir)
        return s.mqtt_username, s.mqtt_password.get_secret_value() if s.mqtt_password else None

    def revoked_device(self, device_id: str) -> None:
        """Called after a revocation commits: an embedded broker drops the device now, not at its next recheck."""
        if self.broker is not None and self.broker.authority is not None:
            dropped = self.broker.recheck_now()
            log.info("revoked %s; disconnected %s", device_id, dropped or "nobody")

    def _start_refresher(self) -> None:
        s = self.settings
        assert self.deployer is not None and self.keys is not None
        policy = FreshnessPolicy(
            assignment_valid_ms=s.assignment_valid_s * 1000,
            manifest_valid_ms=int(s.manifest_valid_days * 86_400_000),
        )
        self.refresher = Refresher(self.deployer, self.keys, policy, interval_s=s.refresh_interval_s).start()

    def _start_alerts(self) -> None:
        s = self.settings
        if s.alert_interval_s <= 0:
            return
        assert self.engine is not None
        webhook = None
        if s.alert_webhook_url is not None and s.alert_webhook_signing_key is not None:
            key = s.alert_webhook_signing_key.get_secret_value()
            webhook = WebhookSender(s.alert_webhook_url, key, max_queue=s.alert_webhook_queue)
        policy = AlertPolicy(drift_lookback_s=s.alert_drift_lookback_s, accuracy_lookback_s=s.alert_accuracy_lookback_s,
                             accuracy_drop=s.alert_accuracy_drop)  # fmt: skip
        hinter = None
        if s.sampler_hint_ttl_s > 0 and self.transport is not None and self.deployer is not None:
            deployer = self.deployer
            hinter = SamplerHinter(self.transport, lambda: deployer.director, ttl_s=s.sampler_hint_ttl_s)
        evaluator = None
        if s.alert_process:
            from cloud.monitoring.alert_process import AlertProcess

            evaluator = AlertProcess(s.database).start()  # its imports overlap the rest of the start
        self.alerts = AlertMonitor(self.engine, policy, interval_s=s.alert_interval_s, webhook=webhook,
                                   hinter=hinter, evaluator=evaluator).start()  # fmt: skip

    def _answers(self, device_id: str) -> bool:
        """Whether this process answers device_id's chunk requests."""
        if self.router is not None and self.router.shared:
            return True  # the broker hands each request to one member of the share group
        return self.ownership is None or self.ownership.owns(device_id)

    def _on_connect(self) -> None:
        if self.router is not None and self.router.shared and self.broker is None and self.transport.protocol != "5":
            log.warning(
                "the broker at %s refused MQTT 5, so it has no shared subscriptions (NATS, RabbitMQ): share group "
                "%r set aside. Every cloud process now hears every device message: ingestion stays exact (its "
                "inserts are idempotent) and the live processes split the chunk requests between them",
                self.mqtt_url, self.settings.share_group,
            )  # fmt: skip
            self.router.unshare(self.transport)
        # the trust chain on every connect: retained, so devices that join or return find the newest root
        if self.deployer is not None:
            try:
                self.deployer.publish_trust()
            except Exception:
                log.exception("could not publish the trust chain")
        # our embedded broker keeps retained state in memory only: after its first start, and after every
        # restart of it (the only way its connection comes back), give every device its desired state again;
        # once was not enough: a device that had not read its desired state before a restart never got it
        if self.broker is not None and self.deployer is not None:
            threading.Thread(target=self._republish, name="edgefleet-republish", daemon=True).start()

    def _republish(self) -> None:
        try:
            sent = self.deployer.republish_all() if self.deployer else 0
            log.info("republished %d desired state(s)", sent)
        except Exception:
            log.exception("could not republish desired states")

    def _probes(self) -> dict[str, Any]:
        """What /healthz (and /metrics) show of this process's parts."""
        return {
            "mqtt": lambda: {
                "connected": bool(self.transport and self.transport.connected), "url": self.mqtt_url,
                "shared_subscriptions": bool(self.router and self.router.shared),
            },
            "ingest": lambda: self.ingestor.stats.snapshot() if self.ingestor else None,
            "chunks": lambda: self.chunk_server.stats.snapshot() if self.chunk_server else None,
            "fanout": lambda: self.fanout.stats.snapshot() if self.fanout else None,
            "alerts": lambda: self.alerts.counters() if self.alerts else None,
        }  # fmt: skip

    def _start_api(self) -> None:
        s = self.settings
        try:
            sock = listen_socket(s.api_host, s.api_port)
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {s.api_host}:{s.api_port}: {exc}") from None
        if s.api_processes == 0:
            self._serve_api(sock)
            return
        from cloud.api.processes import ApiProcesses

        assert self.mqtt_url is not None
        # the API processes accept on the socket; the core keeps it (never accepting) to start a replacement
        # for one that ends, and ApiProcesses.stop() closes it
        mqtt = (self.mqtt_url, self.mqtt_protocol, self._mqtt_credentials())
        self.api_url = _url(s.api_host, sock.getsockname()[1])
        # kept before it starts them: a failed start stops (in stop()) the ones already running
        self.api_processes = ApiProcesses(s.api_processes, s, sock, mqtt, probes=self._probes(),
                                          on_revoked=self.revoked_device)  # fmt: skip
        self.api_processes.start()

    def _serve_api(self, sock: socket.socket) -> None:
        """uvicorn on sock in a thread of this process, until stop()."""
        import uvicorn

        s = self.settings
        assert self.engine is not None and self.deployer is not None
        probes = self._probes()
        on_revoked = self.revoked_device
        if self.api_role is not None:  # what only the core knows, it is asked for
            from functools import partial

            from cloud.api.processes import CORE_PROBES

            asked = {name: partial(self.api_role.core.probe, name) for name in CORE_PROBES}
            probes = {"api_mqtt": probes["mqtt"], **asked}
            on_revoked = self.api_role.core.revoked
        services = AppServices(
            engine=self.engine,
            deployer=self.deployer,
            rollouts=self.rollouts,
            device_mqtt_url=s.device_mqtt_url or self.mqtt_url,
            on_device_revoked=on_revoked,
            retrain=self.retrain,
            probes=probes,
        )
        app = create_app(s, services)
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._server_thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="edgefleet-api", daemon=True
        )
        self._server_thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._server_thread.is_alive() or time.monotonic() > deadline:
                raise ConfigurationError(f"the console API did not start on {s.api_host}:{port}")
            time.sleep(0.01)
        self.api_url = _url(s.api_host, port)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
