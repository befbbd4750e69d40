"""The embedded MQTT broker: amqtt on its own event loop in a background thread.

It is the default broker for `edgefleet up` and `edgefleet demo` (one machine, nothing to install).
Production uses Mosquitto or a broker cluster; the tests run the same MQTT checks against both.

amqtt 0.12.1 speaks MQTT 3.1.1 only: MQTT 5 clients are refused with "unsupported protocol version"
(`PahoTransport` falls back to 3.1.1 on its own; `EmbeddedBroker.mqtt_protocol` says so up front).
The amqtt defects it works around are patched in `cloud.mqtt.amqtt_fixes`; its known limits are
listed there too.

Given a `BrokerAuthority` (what `CloudService` passes unless `embedded_broker_auth` is off) it enforces the
identities and grants a production Mosquitto gets from `edgefleet broker-config`, and it goes further on
revocation: every `recheck_s`, and at once on `recheck_now()` (the revoke API calls it), it disconnects
connected devices whose credentials were revoked. Without one it lets anyone in, anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from types import TracebackType
from typing import Any

from amqtt.broker import Broker

from cloud.errors import BrokerStartError
from cloud.mqtt.amqtt_fixes import EdgeFleetAmqttBroker
from cloud.mqtt.auth_plugins import auth_plugins_config
from cloud.mqtt.broker_auth import BrokerAuthority

log = logging.getLogger(__name__)

# Above this many devices the embedded broker does not keep up on a 2-core machine: `edgefleet sim run` with
# a deploy at 1 s and 10 disconnects at 1.5 s, 20 s and 20 s of drain (load 15-28, shared): 100 devices all
# updated (rollout 4.8 s), 200 all (37 s), 300 between 55 and 300 of 300 over four runs, 500 only 32 of 500;
# Mosquitto updated all 500 in 14 s. Every message is matched against every subscription and every subscription
# against every retained message in Python, on the interpreter the cloud and simulated devices share.
EMBEDDED_BROKER_MAX_DEVICES = 200


def embedded_broker_limit(devices: int) -> str | None:
    """What to tell someone about to run `devices` devices on the embedded broker; None when it is enough."""
    if devices <= EMBEDDED_BROKER_MAX_DEVICES:
        return None
    return (f"{devices} devices is more than the embedded broker (amqtt) keeps up with: above "
            f"{EMBEDDED_BROKER_MAX_DEVICES} devices updates stall (at 500 only 32 updated in 40 s); "
            "use Mosquitto (--mqtt-url mqtt://HOST:1883)")  # fmt: skip


def broker_config(host: str, port: int, authority: BrokerAuthority | None = None) -> dict[str, Any]:
    """amqtt config: one TCP listener, no packet/event logging and no $SYS chatter; the authority's checks,
    or anonymous access without one."""
    plugins = (
        auth_plugins_config(authority) if authority is not None
        else {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
    )  # fmt: skip
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        "plugins": plugins,
    }


class EmbeddedBroker:
    """An MQTT 3.1.1 broker in this process. `start()` returns once it accepts connections."""

    kind = "embedded"
    mqtt_protocol = "3.1.1"
    broker_class: type[Broker] = EdgeFleetAmqttBroker  # tests swap in amqtt's own Broker to watch its bugs

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        authority: BrokerAuthority | None = None,
        recheck_s: float = 30.0,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.authority = authority
        self.recheck_s = recheck_s
        self._start_timeout_s = start_timeout_s
        self._recheck_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> EmbeddedBroker:
        if self.running:
            return self
        _quiet_chatty_loggers()
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_on_loop())
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                failure.append(exc)
                ready.set()
                _close_loop(loop)
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                _close_loop(loop)

        self._thread = threading.Thread(target=run, name=f"edgefleet-broker-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(self._start_timeout_s):
            raise BrokerStartError(f"embedded broker did not start within {self._start_timeout_s} s")
        if failure:
            self._thread.join()
            self._thread = None
            raise BrokerStartError(f"embedded broker could not listen on {self.host}:{self.port}: {failure[0]}")
        log.info("embedded MQTT broker listening on %s", self.url)
        return self

    async def _start_on_loop(self) -> None:
        self._broker = self.broker_class(broker_config(self.host, self.port, self.authority))
        # amqtt logs a failed start (say, a port in use) with a full traceback; start() reports it in one line
        broker_log = logging.getLogger("amqtt.broker")
        level = broker_log.level
        broker_log.setLevel(logging.CRITICAL)
        try:
            await self._broker.start()
        finally:
            broker_log.setLevel(level)
        if self.port == 0:
            server = self._broker._servers["default"].instance
            self.port = server.sockets[0].getsockname()[1]
        if self.authority is not None:
            self._recheck_task = asyncio.ensure_future(self._recheck_forever())

    # -- revocation --------------------------------------------------------------------------------------

    def recheck_now(self, timeout_s: float = 10.0) -> list[str]:
        """Disconnect connected devices whose credentials are revoked; returns their ids. Thread-safe."""
        loop = self._loop
        if self.authority is None or loop is None or not self.running:
            return []
        return asyncio.run_coroutine_threadsafe(self._recheck(), loop).result(timeout_s)

    async def _recheck_forever(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_s)
            try:
                await self._recheck()
            except Exception:  # the database may be down for a while; try again next round
                log.exception("could not recheck connected devices' credentials")

    async def _recheck(self) -> list[str]:
        broker, authority = self._broker, self.authority
        if broker is None or authority is None or not isinstance(broker, EdgeFleetAmqttBroker):
            return []
        connected = {s.username for s, _h in broker.sessions.values() if s.username and s.transitions.is_connected()}
        revoked = await asyncio.get_running_loop().run_in_executor(None, authority.revoked_among, connected)
        dropped = await broker.disconnect_clients(revoked)
        if dropped:
            log.info("disconnected revoked device(s): %s", ", ".join(sorted(dropped)))
        return dropped

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, thread, broker = self._loop, self._thread, self._broker
        if loop is None or thread is None or broker is None or not thread.is_alive():
            return
        if self._recheck_task is not None:
            loop.call_soon_threadsafe(self._recheck_task.cancel)
            self._recheck_task = None
        future = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
        try:
            future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            log.warning("embedded broker did not shut down within %s s; closing its connections", timeout_s)
        except Exception:  # a failed shutdown must still stop the loop and free the port
            log.exception("embedded broker shutdown failed")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        self._thread = None
        self._broker = None

    def restart(self) -> EmbeddedBroker:
        """Stop and start again on the same port; sessions and retained messages are lost, as amqtt keeps
        them in memory."""
        self.stop()
        return self.start()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _quiet_chatty_loggers() -> None:
    """amqtt and its state machine library log every connection at INFO; keep them at WARNING unless the
    user has set their levels explicitly."""
    for name in ("amqtt", "transitions"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left (client handlers, timers) and close the loop without 'pending task' noise."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(asyncio.sleep(0))  # transports closed by the cancelled tasks finish closing
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
