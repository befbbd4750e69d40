"""The agent's exceptions. Each carries a stable `code`, the one reported in ReportedState.last_error and
LifecycleEvent.error (trust errors from `protocols.trust` keep their own codes).

    AgentError                      code "agent_error"
    ├── ConfigError                 code "bad_config"          settings that cannot be used
    ├── StoreError                  code "store_failed"        the state directory cannot be read/written
    ├── MalformedPayloadError       code "malformed_payload"   an MQTT message we cannot accept
    ├── NoModelError                code "no_model"            predict() before any model is active
    ├── BadInputError               code "bad_input"           input that is not rows of numbers
    ├── NoCompatibleArtifactError   code "no_compatible_artifact"
    └── DownloadError               code "download_failed"     chunks missing after the retries
"""

from __future__ import annotations


class AgentError(Exception):
    code = "agent_error"


class ConfigError(AgentError):
    code = "bad_config"


class StoreError(AgentError):
    code = "store_failed"


class MalformedPayloadError(AgentError):
    code = "malformed_payload"


class NoModelError(AgentError):
    code = "no_model"


class NoCompatibleArtifactError(AgentError):
    code = "no_compatible_artifact"


class DownloadError(AgentError):
    code = "download_failed"


LOAD_FAILED = "load_failed"
SELF_TEST_FAILED = "self_test_failed"


def error_code(exc: BaseException, default: str) -> str:
    """The stable code of an exception from any part (ours, protocols.trust, the runtime), else default."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else default


class BadInputError(AgentError, ValueError):
    """Input the agent rejects before any model sees it (the runtime's InputError shares the code)."""

    code = "bad_input"
