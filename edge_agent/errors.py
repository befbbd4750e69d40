"""The agent's exceptions, one tree. Each carries a stable `code` from `protocols.codes.ErrorCode`, the one
reported in ReportedState.last_error and LifecycleEvent.error (trust errors from `protocols.trust` keep
their own codes).

    AgentError                      code "agent_error"
    ├── ConfigError                 code "bad_config"          settings that cannot be used
    ├── StoreError                  code "store_failed"        the state directory cannot be read/written
    ├── MalformedPayloadError       code "malformed_payload"   an MQTT message we cannot accept
    ├── NoModelError                code "no_model"            predict() before any model is active
    ├── BadInputError               code "bad_input"           input that is not rows of numbers, or not the
    │                                                          shape/dtype/finite values a model takes (a ValueError)
    ├── NoCompatibleArtifactError   code "no_compatible_artifact"
    ├── DownloadError               code "download_failed"     chunks missing after the retries
    ├── RuntimeLoadError            code "load_failed"         the runtime is missing or cannot load the artifact
    ├── RuntimeCrashedError         code "runtime_crashed"     loading it killed a child process (a signal)
    ├── TransportError              code "agent_error"         bad broker URL, refused credentials, publish failed
    │                                                          (re-exported by edge_agent.transport, its home port)
    └── EnrollmentError             code "agent_error"         `provision --token`: the cloud refused the token,
                                                               could not be reached, or answered nonsense
"""

from __future__ import annotations

from protocols.codes import ErrorCode


class AgentError(Exception):
    code: str = ErrorCode.AGENT_ERROR


class ConfigError(AgentError):
    code = ErrorCode.BAD_CONFIG


class StoreError(AgentError):
    code = ErrorCode.STORE_FAILED


class MalformedPayloadError(AgentError):
    code = ErrorCode.MALFORMED_PAYLOAD


class NoModelError(AgentError):
    code = ErrorCode.NO_MODEL


class NoCompatibleArtifactError(AgentError):
    code = ErrorCode.NO_COMPATIBLE_ARTIFACT


class DownloadError(AgentError):
    code = ErrorCode.DOWNLOAD_FAILED


class BadInputError(AgentError, ValueError):
    """Input the agent or a runtime rejects: not rows of numbers, wrong shape or dtype, values not finite."""

    code = ErrorCode.BAD_INPUT


class RuntimeLoadError(AgentError):
    """The runtime is not installed, or it cannot load these bytes as a model of this schema."""

    code = ErrorCode.LOAD_FAILED


class RuntimeCrashedError(AgentError):
    """Loading the model killed the process that tried it (a child process, by a signal)."""

    code = ErrorCode.RUNTIME_CRASHED


class TransportError(AgentError):
    """The transport could not do what was asked (bad URL, refused credentials, publish failed).

    No code of its own: the agent reports it as "agent_error", as it did before it joined the tree."""


class EnrollmentError(AgentError):
    """Provisioning by token failed; the message is one line saying why and what to do."""


def error_code(exc: BaseException, default: str) -> str:
    """The stable code of an exception from any part (ours, protocols.trust, the runtime), else default."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else default
