"""Enrollment: tokens (admin), the one public route a device calls to spend one, and revocation (admin).

`POST /api/v1/enroll` needs no operator token (the enrollment token is the credential) and answers every
refused token with the same 403, so probing it tells nothing. A token id we issued carries a keyed tag
(cloud.identity.token_tags): an id of that shape with a tag we did not make is refused at once (no lookup,
no audit row, nothing counted); refusals of an id we issued are counted per id, refusals of any other (ids
issued before tags) per client address. Past the limit in a minute the answer is 429 for a while
(cloud.api.throttle), so a flood of guesses cannot fill the audit log, and guessers sharing a device's
address (a NAT) cannot hold up a device that presents a token we issued. Redemption, the
device's row and the audit row commit together (cloud.identity.redemption); then label deployments the
device matches reach it.
"""

from __future__ import annotations

import base64
import logging

from fastapi import Request, status

from cloud.api.auth import OperatorDep, api_router, public_router
from cloud.api.deps import ServicesDep, SessionDep
from cloud.api.schemas import (
    DeviceRevoked,
    EnrollAnswer,
    EnrollmentTokenCreate,
    EnrollmentTokenCreated,
    EnrollmentTokenPublic,
    EnrollRequest,
)
from cloud.api.throttle import RefusalThrottle
from cloud.errors import ConfigurationError, EnrollmentRefused, NotFoundError, TooManyRequestsError
from cloud.identity import audit, enrollment
from cloud.identity.records import DeviceCredential, EnrollmentToken
from cloud.identity.redemption import enroll_with_token
from cloud.identity.token_tags import ENROLLMENT_TOKEN, Tag, TagKeys
from cloud.identity.tokens import Role
from cloud.registry.keys import CHAIN_FILE
from cloud.settings import CloudSettings
from cloud.token_buckets import client_address

log = logging.getLogger(__name__)

router = api_router(tags=["enrollment"], minimum=Role.ADMIN)
public = public_router(tags=["enrollment"])


@router.post("/enrollment-tokens", response_model=EnrollmentTokenCreated, status_code=status.HTTP_201_CREATED)
def create_enrollment_token(
    session: SessionDep, operator: OperatorDep, body: EnrollmentTokenCreate
) -> EnrollmentTokenCreated:
    row, text = enrollment.create_enrollment_token(
        session, labels=body.labels, device_id=body.device_id, ttl_s=body.ttl_s
    )
    audit.record_by(session, operator, "enrollment_token.create", row.id,
                    {"device_id": body.device_id, "labels": body.labels, "ttl_s": body.ttl_s})
    session.commit()
    session.refresh(row)
    return EnrollmentTokenCreated(**EnrollmentTokenPublic.model_validate(row, from_attributes=True).model_dump(),
                                  token=text)


@router.get("/enrollment-tokens", response_model=list[EnrollmentTokenPublic])
def list_enrollment_tokens(session: SessionDep) -> list[EnrollmentToken]:
    return enrollment.list_enrollment_tokens(session)


@router.post("/devices/{device_id}/revoke", response_model=DeviceRevoked)
def revoke_device(
    session: SessionDep, services: ServicesDep, operator: OperatorDep, device_id: str
) -> DeviceRevoked:
    """Withdraw the device's broker credentials; ingestion drops its messages from now on, and an embedded
    broker in this process disconnects it at once (Mosquitto refuses it after its next reload)."""
    if session.get(DeviceCredential, device_id) is None:
        raise NotFoundError(f"no enrolled device {device_id}")
    revoked = enrollment.revoke_device(session, device_id)
    audit.record_by(session, operator, "device.revoke", device_id, {"had_live_credentials": revoked})
    session.commit()
    if services.on_device_revoked is not None:
        try:
            services.on_device_revoked(device_id)
        except Exception:  # revoked all the same; the broker's periodic recheck drops it
            log.exception("could not disconnect revoked device %s now", device_id)
    return DeviceRevoked(device_id=device_id, revoked=revoked)


@public.post("/enroll", response_model=EnrollAnswer)
def enroll(request: Request, services: ServicesDep, body: EnrollRequest) -> EnrollAnswer:
    """A device spends its enrollment token: broker credentials, the trust chain to pin, where to connect."""
    settings: CloudSettings = request.app.state.settings
    throttle: RefusalThrottle = request.app.state.enroll_throttle
    tags: TagKeys = request.app.state.tag_keys
    if tags.stale():
        tags.reload(services.engine)
    token_id = enrollment.token_id_of(body.token) or ""
    tag = tags.judge(token_id, ENROLLMENT_TOKEN)
    if tag is Tag.FORGED:
        raise EnrollmentRefused("forged id")  # the same 403, at the cost of an HMAC: no lookup, no audit row
    # an id we issued is throttled by itself, so a device is not held up by guessers at its address (a NAT)
    client = f"token {token_id}" if tag is Tag.OURS else client_address(request.scope)
    wait_s = throttle.retry_after_s(client)
    if wait_s:
        raise TooManyRequestsError(f"too many refused enrollments from {client}; retry in {wait_s} s", wait_s)
    try:
        enrolled = enroll_with_token(services.engine, body.token, body.device_id)
    except EnrollmentRefused:
        throttle.note_refusal(client)
        raise
    try:
        services.deployer.reconcile_device(enrolled.device_id)  # label deployments it already matches
    except Exception:  # enrolled all the same; the next label change or deployment reaches it
        log.exception("could not reconcile newly enrolled device %s", enrolled.device_id)
    return EnrollAnswer(
        device_id=enrolled.device_id,
        fleet=services.deployer.fleet,
        mqtt_url=_device_mqtt_url(services.device_mqtt_url, settings),
        username=enrolled.device_id,
        password=enrolled.password,
        labels=enrolled.labels,
        trust_chain=base64.b64encode(_trust_chain(settings)).decode(),
        tls_ca=_tls_ca(settings),
    )


def _device_mqtt_url(url: str | None, settings: CloudSettings) -> str:
    url = url or settings.device_mqtt_url or (None if settings.uses_embedded_broker else settings.mqtt_url)
    if not url:
        raise ConfigurationError("no broker URL for devices: set EDGEFLEET_DEVICE_MQTT_URL")
    return url


def _trust_chain(settings: CloudSettings) -> bytes:
    assert settings.keys_dir is not None
    try:
        return (settings.keys_dir / CHAIN_FILE).read_bytes()  # read each time: a rotation appends to it
    except OSError as exc:
        raise ConfigurationError(f"cannot read the trust chain in {settings.keys_dir}: {exc}") from None


def _tls_ca(settings: CloudSettings) -> str | None:
    path = settings.device_tls_ca or settings.mqtt_tls_ca
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the CA certificate {path}: {exc}") from None
