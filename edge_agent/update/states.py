"""The states of the update machine, their wire names, and the two groups the table is written in.

IDLE/ACTIVE/FAILED (settled)  the machine waits for a desired state; the serving model (if any) serves
DOWNLOADING ... SELF_TEST     an update is in progress; the previous model keeps serving throughout
PROBATION                     the new model serves, the previous one stays loaded (shadowing, rolling
                              back by itself on a failed health check); on the wire it is ACTIVE, with
                              ReportedState.probation_until_ms saying until when
"""

from __future__ import annotations

from enum import Enum

from protocols.v1 import messages_pb2 as pb


class State(Enum):
    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    LOADING = "loading"
    SELF_TEST = "self_test"
    ACTIVE = "active"
    PROBATION = "probation"
    FAILED = "failed"

    @property
    def wire(self) -> pb.UpdateState:
        return _WIRE_STATES[self]


_WIRE_STATES = {
    State.IDLE: pb.UPDATE_STATE_IDLE,
    State.DOWNLOADING: pb.UPDATE_STATE_DOWNLOADING,
    State.VERIFYING: pb.UPDATE_STATE_VERIFYING,
    State.LOADING: pb.UPDATE_STATE_LOADING,
    State.SELF_TEST: pb.UPDATE_STATE_SELF_TEST,
    State.ACTIVE: pb.UPDATE_STATE_ACTIVE,
    State.PROBATION: pb.UPDATE_STATE_ACTIVE,  # the desired state is reached; the cloud sees probation_until_ms
    State.FAILED: pb.UPDATE_STATE_FAILED,
}

IN_PROGRESS = frozenset({State.DOWNLOADING, State.VERIFYING, State.LOADING, State.SELF_TEST})
SETTLED = frozenset({State.IDLE, State.ACTIVE, State.FAILED, State.PROBATION})
