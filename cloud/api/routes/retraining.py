"""Retraining by an operator, and the registry aliases: POST /models/{id}/retrain runs a champion/challenger
retrain (deployer or admin; the winner goes to a canary or waits for approval, by the request's policy);
GET /models/{id}/aliases shows where champion, challenger and production point and every move;
POST /models/{id}/aliases/{alias} moves one (an approval, a promotion or a manual rollback of an alias)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import status
from pydantic import AfterValidator, BaseModel, Field

from cloud.api.auth import OperatorDep, api_router
from cloud.api.deps import ServicesDep, SessionDep
from cloud.db.bounds import no_nul
from cloud.errors import ServiceUnavailableError
from cloud.identity import audit
from cloud.registry import aliases
from cloud.training import champion as rule
from cloud.training import retrain as loop
from cloud.training.triggers import by_operator

router = api_router(prefix="/models", tags=["retraining"])

# free text kept in the database: a NUL reached PostgreSQL ("text fields cannot contain NUL") as a 500
# (tests/attacks/test_attack_fast_reads_and_aliases.py); the path parameters are checked app-wide
NoNul = AfterValidator(no_nul)


class RetrainRequest(BaseModel):
    reason: Annotated[str, NoNul] = Field(default="", max_length=1000)
    on_win: Literal["canary", "approval"] = "approval"
    margin: float = Field(default=0.02, gt=-1, lt=1)
    max_reference_loss: float = Field(default=0.03, ge=0, lt=1)
    min_field_rows: int = Field(default=30, ge=1, le=10_000_000)
    since_ms: int | None = Field(default=None, ge=0)


class ComparisonView(BaseModel):
    n: int
    champion_accuracy: float | None
    challenger_accuracy: float | None
    gain: float | None
    gain_low: float | None
    gain_high: float | None


class RetrainView(BaseModel):
    run_id: str
    trigger: str
    outcome: str
    reasons: list[str]
    champion: str
    challenger: str | None
    deployment_id: str | None
    datasets: dict[str, str]
    field: ComparisonView
    reference: ComparisonView


class AliasMoveView(BaseModel):
    alias: str
    from_version: str | None
    to_version: str
    actor: str
    reason: str
    ts_ms: int


class AliasesView(BaseModel):
    current: dict[str, str]
    history: list[AliasMoveView]


class AliasMoveRequest(BaseModel):
    version: Annotated[str, NoNul] = Field(min_length=1, max_length=64)
    reason: Annotated[str, NoNul] = Field(min_length=1, max_length=1000)


def _comparison(c: rule.Comparison) -> ComparisonView:
    low, high = c.gain_interval() or (None, None)
    return ComparisonView(n=c.n, champion_accuracy=c.champion_accuracy, challenger_accuracy=c.challenger_accuracy,
                          gain=c.gain, gain_low=low, gain_high=high)  # fmt: skip


@router.post("/{model_id}/retrain", response_model=RetrainView, status_code=status.HTTP_201_CREATED)
def start_retrain(
    session: SessionDep, services: ServicesDep, operator: OperatorDep, model_id: str, body: RetrainRequest
) -> RetrainView:
    """Snapshot the model's labelled field data, train a challenger, judge it against the champion and,
    if it wins by the margin, register it as `challenger` (and start its canary when on_win is canary)."""
    if services.retrain is None:
        raise ServiceUnavailableError("this cloud has no artifact store to retrain with")
    policy = loop.RetrainPolicy(
        margin=rule.MarginPolicy(margin=body.margin, max_reference_loss=body.max_reference_loss,
                                 min_field_rows=body.min_field_rows),
        on_win=body.on_win,
    )  # fmt: skip
    from cloud.registry.field_data import Selection

    result = services.retrain(model_id, trigger=by_operator(operator.actor, body.reason), actor=operator.actor,
                              policy=policy, selection=Selection(model_id, since_ms=body.since_ms))  # fmt: skip
    audit.record_by(session, operator, "model.retrain", model_id, {
        "run_id": result.run_id, "outcome": result.verdict.outcome.value, "challenger": result.challenger,
    })  # fmt: skip
    session.commit()
    return RetrainView(
        run_id=result.run_id, trigger=result.trigger.reason, outcome=result.verdict.outcome.value,
        reasons=result.verdict.reasons, champion=result.champion, challenger=result.challenger,
        deployment_id=result.deployment_id, datasets=result.datasets, field=_comparison(result.field_eval),
        reference=_comparison(result.reference),
    )  # fmt: skip


@router.get("/{model_id}/aliases", response_model=AliasesView)
def get_aliases(session: SessionDep, model_id: str) -> AliasesView:
    moves = [AliasMoveView.model_validate(m, from_attributes=True) for m in aliases.history(session, model_id)]
    return AliasesView(current=aliases.current(session, model_id), history=moves)


@router.post("/{model_id}/aliases/{alias}", response_model=AliasesView)
def move_alias(
    session: SessionDep, operator: OperatorDep, model_id: str, alias: str, body: AliasMoveRequest
) -> AliasesView:
    aliases.move(session, model_id, alias, body.version, actor=operator.actor, reason=body.reason)
    audit.record_by(session, operator, "model.alias", model_id, {"alias": alias, "version": body.version})
    session.commit()
    return get_aliases(session, model_id)
