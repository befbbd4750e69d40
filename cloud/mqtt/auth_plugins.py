"""amqtt 0.12.1 plugins that put a `BrokerAuthority` in charge of the embedded broker.

`AuthorityAuthPlugin.authenticate` decides each CONNECT (amqtt lets a client in only if every auth plugin
says True); `AuthorityTopicPlugin.topic_filtering` decides each PUBLISH (write) and SUBSCRIBE (read; amqtt
checks the filter in `Broker.add_subscription`, and `EdgeFleetAmqttBroker` checks a shared subscription's
inner filter). RECEIVE (every delivery) is allowed: the subscription that matched it was checked already,
and a device that loses its credentials is disconnected by `EmbeddedBroker`'s recheck.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from cloud.identity.acl import Access

log = logging.getLogger(__name__)


class AuthorityAuthPlugin(BaseAuthPlugin):
    @dataclass
    class Config:
        authority: Any = None  # cloud.mqtt.broker_auth.BrokerAuthority (dacite passes Any through)

    async def authenticate(self, *, session: Session) -> bool | None:
        authority = self.config.authority
        if authority is None or session is None:
            return False
        will_topic = session.will_topic if session.will_flag else None
        try:
            # the database lookup and PBKDF2 block: keep them off the broker's loop
            return bool(await asyncio.get_running_loop().run_in_executor(
                None, authority.check_connect, session.username, session.password, session.client_id, will_topic
            ))  # fmt: skip
        except Exception:  # a database outage refuses connections, it does not crash the broker
            log.exception("could not check the credentials of %r", session.username)
            return False


class AuthorityTopicPlugin(BaseTopicPlugin):
    @dataclass
    class Config:
        authority: Any = None

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        authority = self.config.authority
        if action is Action.RECEIVE:
            return True
        if authority is None or session is None or not topic:
            return False
        if action is Action.PUBLISH:
            return bool(authority.may(session.username, Access.WRITE, topic))
        if action is Action.SUBSCRIBE:
            return bool(authority.may(session.username, Access.READ, topic))
        return False


def auth_plugins_config(authority: Any) -> dict[str, Any]:
    """The `plugins` section of an amqtt config that enforces authority."""
    return {
        f"{__name__}.AuthorityAuthPlugin": {"authority": authority},
        f"{__name__}.AuthorityTopicPlugin": {"authority": authority},
    }
