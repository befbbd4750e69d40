"""The device's half of enrollment: spend a token at the cloud's `POST /api/v1/enroll`, once.

Standard library only (`urllib`): a device has no httpx or requests. The answer is the device's broker
credentials, the broker URL, the labels the operator fixed, the fleet's TrustChain to pin and, when the
broker uses a private CA, its certificate. Everything that can go wrong becomes one EnrollmentError line.
The trust chain arrives over this connection: use https (with `--cloud-ca` for a private CA), or pin the
expected chain out of band with `--trust`, which `provision` then compares with what the cloud sent.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_agent.errors import EnrollmentError

ENROLL_PATH = "/api/v1/enroll"
_MAX_ANSWER_BYTES = 4 * 1024 * 1024  # a trust chain and a CA certificate: kilobytes, not megabytes


@dataclass(frozen=True)
class Enrollment:
    device_id: str
    fleet: str
    mqtt_url: str
    username: str
    password: str
    labels: dict[str, str]
    trust_chain: bytes
    tls_ca: str | None


def enroll(
    cloud_url: str, token: str, device_id: str, *, cloud_ca: Path | None = None, timeout_s: float = 15.0
) -> Enrollment:
    """Redeem token for device_id at cloud_url (the console API's base URL); EnrollmentError if not."""
    parts = urlsplit(cloud_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EnrollmentError(f"--cloud-url must look like https://cloud.example:8080, not {cloud_url!r}")
    url = cloud_url.rstrip("/") + ENROLL_PATH
    context = None
    if cloud_ca is not None:
        try:
            context = ssl.create_default_context(cafile=str(cloud_ca))
        except (OSError, ssl.SSLError) as exc:
            raise EnrollmentError(f"cannot use the CA certificate {cloud_ca}: {exc}") from None
    request = urllib.request.Request(
        url, data=json.dumps({"token": token, "device_id": device_id}).encode(), method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            body = response.read(_MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise EnrollmentError(_refusal(exc.code, _detail(exc), device_id)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise EnrollmentError(f"cannot reach the cloud at {url}: {getattr(exc, 'reason', exc)}") from None
    if len(body) > _MAX_ANSWER_BYTES:
        raise EnrollmentError(f"the cloud at {url} sent an answer over {_MAX_ANSWER_BYTES} bytes")
    return _parse(body, device_id, url)


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(exc.read(64 * 1024)).get("detail", "")
    except (ValueError, AttributeError, OSError):
        return ""
    return (detail if isinstance(detail, str) else json.dumps(detail))[:300]


def _refusal(status: int, detail: str, device_id: str) -> str:
    if status == 403:
        return ("the cloud refused the enrollment token (unknown, already used, expired or for another device); "
                "ask an operator for a new one (edgefleet devices enroll)")
    if status == 409:
        return (f"device id {device_id} is already enrolled; to re-provision it, ask an operator for a token "
                f"naming it (edgefleet devices enroll --device-id {device_id})")
    if status == 422:
        return f"the cloud refused the request: {detail or 'invalid token or device id'}"
    return f"the cloud answered HTTP {status}{': ' + detail if detail else ''}"


def _parse(body: bytes, device_id: str, url: str) -> Enrollment:
    def bad(why: str) -> EnrollmentError:
        return EnrollmentError(f"the answer from {url} is not an enrollment ({why}); is --cloud-url the console API?")

    try:
        answer: Any = json.loads(body)
    except ValueError:
        raise bad("not JSON") from None
    if not isinstance(answer, dict):
        raise bad("not a JSON object")
    strings = ("device_id", "fleet", "mqtt_url", "username", "password", "trust_chain")
    missing = [key for key in strings if not isinstance(answer.get(key), str) or not answer[key]]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    labels, tls_ca = answer.get("labels") or {}, answer.get("tls_ca")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise bad("labels are not text")
    if tls_ca is not None and not isinstance(tls_ca, str):
        raise bad("tls_ca is not text")
    if answer["device_id"] != device_id:
        raise bad(f"it is for device {answer['device_id']!r}")
    try:
        chain = base64.b64decode(answer["trust_chain"], validate=True)
    except (binascii.Error, ValueError):
        raise bad("trust_chain is not base64") from None
    return Enrollment(
        device_id=device_id, fleet=answer["fleet"], mqtt_url=answer["mqtt_url"], username=answer["username"],
        password=answer["password"], labels=dict(labels), trust_chain=chain, tls_ca=tls_ca or None,
    )  # fmt: skip
