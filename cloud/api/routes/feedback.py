"""Labels from the field: POST ground truth for sampled predictions (deployer or admin); the accuracy they
give is read per model version under /models (cloud.monitoring.feedback)."""

from __future__ import annotations

from cloud.api.auth import OperatorDep, api_router
from cloud.api.deps import SessionDep
from cloud.api.schemas import FeedbackCreate, FeedbackStored
from cloud.identity import audit
from cloud.monitoring import feedback

router = api_router(prefix="/feedback", tags=["feedback"])


@router.post("", response_model=FeedbackStored, status_code=201)
def post_feedback(session: SessionDep, operator: OperatorDep, body: FeedbackCreate) -> FeedbackStored:
    """Record labels, joined later to sampled predictions by (device_id, prediction_id). A label whose
    sample has not arrived yet is kept for it. One audit row per request, committed with the labels."""
    labels = [feedback.Label(x.device_id, x.prediction_id, x.label, x.ts_ms) for x in body.labels]
    stored = feedback.record(session, labels)
    detail = {"received": len(labels), "stored": stored, "devices": len({x.device_id for x in labels})}
    audit.record_by(session, operator, "feedback.record", "", detail)
    session.commit()
    return FeedbackStored(received=len(labels), stored=stored)
