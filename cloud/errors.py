"""The cloud's exceptions: one base, an HTTP status on each class, turned into responses in one place
(`cloud.api.app`). Code that raises them knows nothing of HTTP.

    CloudError                      500  "internal"
    ├── NotAuthenticatedError       401  "not_authenticated"  no API token, or one that is unknown, revoked, expired
    ├── ForbiddenError              403  "forbidden"          the token's role does not allow this call
    │   └── EnrollmentRefused       403  "enrollment_refused" an enrollment token unknown, used, expired, misaddressed
    ├── NotFoundError               404  "not_found"          no such device, model version, deployment ...
    │   └── ArtifactNotFoundError   404  "artifact_not_found"
    ├── ConflictError               409  "conflict"           a unique key already taken
    ├── PayloadTooLargeError        413  "payload_too_large"  a request body over the configured cap
    ├── InvalidRequestError         422  "invalid_request"    a request that cannot be carried out as given
    │   ├── ArtifactMismatchError   422  "artifact_mismatch"  artifact bytes differ from their manifest entry
    │   └── MalformedMessage        422  "malformed_message"  a device message that cannot become a row
    ├── ArtifactCorruptError        500  "artifact_corrupt"   stored bytes no longer match their digest
    ├── ConfigurationError          500  "configuration"      settings that cannot work (or are unsafe)
    │   └── KeyStoreError           500  "key_store"          a key directory missing, incomplete or unreadable
    └── BrokerStartError            500  "broker_start"       the embedded MQTT broker could not start

MalformedMessage is also a ValueError and BrokerStartError a RuntimeError, as they were before they joined
this tree, so code that catches the builtin keeps working.
"""

from __future__ import annotations


class CloudError(Exception):
    status_code = 500
    code = "internal"


class NotAuthenticatedError(CloudError):
    status_code = 401
    code = "not_authenticated"


class ForbiddenError(CloudError):
    status_code = 403
    code = "forbidden"


class EnrollmentRefused(ForbiddenError):
    """One message for every reason, so that a wrong token tells an attacker nothing; `reason` is for the
    audit log (which only admins read), never for the response."""

    code = "enrollment_refused"
    MESSAGE = "enrollment token refused: unknown, already used, expired or for another device"

    def __init__(self, reason: str = "") -> None:
        super().__init__(self.MESSAGE)
        self.reason = reason


class NotFoundError(CloudError):
    status_code = 404
    code = "not_found"


class ArtifactNotFoundError(NotFoundError):
    code = "artifact_not_found"


class ConflictError(CloudError):
    status_code = 409
    code = "conflict"


class PayloadTooLargeError(CloudError):
    status_code = 413
    code = "payload_too_large"


class TooManyRequestsError(CloudError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class ServiceUnavailableError(CloudError):
    """Busy for now (e.g. no database connection free within the pool timeout): retry later."""

    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class InvalidRequestError(CloudError):
    status_code = 422
    code = "invalid_request"


class ArtifactMismatchError(InvalidRequestError):
    code = "artifact_mismatch"


class ArtifactCorruptError(CloudError):
    code = "artifact_corrupt"


class ConfigurationError(CloudError):
    code = "configuration"


class MalformedMessage(InvalidRequestError, ValueError):
    """A payload that cannot become a row (does not parse, or contradicts its topic)."""

    code = "malformed_message"


class KeyStoreError(ConfigurationError):
    """A key directory that is missing, incomplete or unreadable."""

    code = "key_store"


class BrokerStartError(CloudError, RuntimeError):
    """The embedded broker could not start (port taken, bad address)."""

    code = "broker_start"
