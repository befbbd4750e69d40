"""The console's routes: server-rendered pages under /console, and the few forms that change something.

Every page authenticates the operator from the sign-in cookie (`access`) and renders only what the role
allows; every POST checks that it came from the console's own pages. Steering a rollout goes through the
same controller methods as the API, with the same audit rows committed in the same transaction. Errors
become HTML pages (404 for an unknown id, 403 for a role too low), never a 500 for bad input.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import read_in_thread
from cloud.api.read_cache import ReadCache
from cloud.console import access, charts, views
from cloud.errors import CloudError, ConfigurationError, NotFoundError
from cloud.identity import audit
from cloud.identity.tokens import Operator, Role
from cloud.monitoring import alerts as monitoring_alerts
from cloud.types import now_ms

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
MAX_FORM_BYTES = 64 * 1024
ROLLOUT_ACTIONS = ("pause", "resume", "cancel", "rollback")

templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))


def _age(ms: int | None) -> str:
    if not ms:
        return "never"
    seconds = max((now_ms() - ms) / 1000, 0)
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.2f}%"


def agent_seq(seq: int) -> str:
    """An agent's message sequence number as "start.n": the high 32 bits count the agent's starts
    (edge_agent.messages.SeqCounter), so 4294967310 is the 14th message after its first start."""
    return f"{seq >> 32}.{seq & 0xFFFFFFFF}"


templates.filters.update(age=_age, num=charts.format_value, time=charts.format_time, percent=_percent, seq=agent_seq)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    operator: Operator | None = getattr(request.state, "console_operator", None)
    html = templates.get_template(name).render(
        request=request, operator=operator, can_steer=bool(operator and operator.role.allows(Role.DEPLOYER)),
        is_admin=bool(operator and operator.role.allows(Role.ADMIN)), path=request.url.path, **context,
    )  # fmt: skip
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    titles = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Not now", 422: "Invalid input",
              429: "Too many requests"}
    return render(request, "error.html", status_code, title=titles.get(status_code, "Error"), message=message,
                  code=status_code)  # fmt: skip


class ConsoleRoute(APIRoute):
    """Turns what a page may raise into a page: the sign-in form, or an HTML error with the right status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except access.SignInRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/console/signin?next={quote(target, safe='')}", status_code=303)
            except access.RoleTooLow as exc:
                return error_page(request, 403, str(exc))
            except access.CrossSiteRequest as exc:
                return error_page(request, 403, str(exc))
            except RequestValidationError:
                return error_page(request, 422, "a parameter of this page was not understood")
            except CloudError as exc:
                if exc.status_code >= 500:
                    log.error("console %s: %s", request.url.path, exc)
                page = error_page(request, exc.status_code, str(exc))
                page.headers.update(getattr(exc, "headers", None) or {})  # e.g. a 429's Retry-After
                return page

        return guarded


router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


# -- dependencies -----------------------------------------------------------------------------------------------


def db_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.services.engine) as session:
        yield session


DbSession = Annotated[Session, Depends(db_session)]


def signed_in(request: Request, session: DbSession) -> Operator:
    operator = access.operator_from_cookie(request, session)
    if operator is None:
        raise access.SignInRequired()
    request.state.console_operator = operator
    return operator


SignedIn = Annotated[Operator, Depends(signed_in)]


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form (what the console's own forms send), after the same-origin check; the last value
    of a repeated field wins."""
    access.check_same_origin(request)
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise access.CrossSiteRequest("form too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {key: values[-1] for key, values in fields.items() if "\x00" not in key + values[-1]}


Form = Annotated[dict[str, str], Depends(form)]


# -- sign-in ------------------------------------------------------------------------------------------------------


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/console", status_code=307)


@router.get("/console/signin")
def signin_form(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "signin.html", next=access.safe_next(next))


@router.post("/console/signin")
def signin(request: Request, session: DbSession, fields: Form) -> Response:
    token = fields.get("token", "")
    operator = access.check_token(request, session, token)
    if operator is None:
        return render(request, "signin.html", 401, next=access.safe_next(fields.get("next")),
                      error="That token is unknown, revoked or expired.")  # fmt: skip
    response = RedirectResponse(access.safe_next(fields.get("next")), status_code=303)
    access.keep_token(response, request, token)
    return response


@router.post("/console/signout")
def signout(request: Request, _fields: Form) -> Response:
    response = RedirectResponse("/console/signin", status_code=303)
    access.forget_token(response, request)
    return response


@router.get("/console/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC:
        raise NotFoundError(f"no console asset {name!r}")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})


# -- pages -------------------------------------------------------------------------------------------------------


@router.get("/console")
async def fleet_page(
    request: Request, _operator: SignedIn, after: str | None = None, before: str | None = None
) -> HTMLResponse:
    """A page of devices, under tiles that count the whole fleet: one grouped query kept in the API's read
    cache (api_read_cache_s, emptied by any change made through the console or API), so a fleet page
    refreshing every 10 s in many browsers costs one aggregate a second."""
    services = request.app.state.services
    cache: ReadCache[Any] = request.app.state.read_cache

    async def tiles() -> dict[str, Any]:
        return await read_in_thread(services, views.fleet_tiles)

    def page(session: Session) -> dict[str, Any]:
        return {**views.fleet_page(session, after, before),
                "active_alerts": monitoring_alerts.listing(session, include_cleared=False)}  # fmt: skip

    context = {**await cache.get(("console-fleet-tiles",), tiles), **await read_in_thread(services, page)}
    return await run_in_threadpool(lambda: render(request, "fleet.html", **context))  # 500 rows: not on the loop


@router.get("/console/devices/{device_id}")
def device_page(request: Request, session: DbSession, _operator: SignedIn, device_id: str) -> HTMLResponse:
    return render(request, "device.html", **views.device_page(session, device_id))


@router.get("/console/models")
def models_page(request: Request, session: DbSession, _operator: SignedIn) -> HTMLResponse:
    return render(request, "models.html", **views.models_page(session))


@router.get("/console/models/{model_id}")
def model_page(request: Request, session: DbSession, _operator: SignedIn, model_id: str) -> HTMLResponse:
    return render(request, "model.html", **views.model_page(session, model_id))


@router.get("/console/models/{model_id}/versions/{version}/drift")
def drift_page(
    request: Request, session: DbSession, _operator: SignedIn, model_id: str, version: str, hours: float = 1.0
) -> HTMLResponse:
    hours = min(max(hours, 0.05), 24 * 7) if math.isfinite(hours) else 1.0
    return render(request, "drift.html", **views.drift_page(session, model_id, version, hours))


@router.get("/console/alerts")
def alerts_page(request: Request, session: DbSession, _operator: SignedIn) -> HTMLResponse:
    return render(request, "alerts.html", alerts=monitoring_alerts.listing(session))


@router.get("/console/rollouts")
def rollouts_page(request: Request, session: DbSession, _operator: SignedIn) -> HTMLResponse:
    return render(request, "rollouts.html", **views.rollouts_page(session), values={})


@router.get("/console/rollouts/{deployment_id}")
def rollout_page(
    request: Request, session: DbSession, _operator: SignedIn, deployment_id: str, done: str | None = None
) -> HTMLResponse:
    notice = f"{done} done" if done in ROLLOUT_ACTIONS else ("rollout started" if done == "start" else None)
    return render(request, "rollout.html", **views.rollout_page(session, deployment_id), notice=notice)


@router.get("/console/deployments")
def deployments_page(request: Request, session: DbSession, _operator: SignedIn) -> HTMLResponse:
    return render(request, "deployments.html", **views.deployments_page(session))


@router.get("/console/deployments/{deployment_id}")
def deployment_page(
    request: Request, session: DbSession, _operator: SignedIn, deployment_id: str, after: str | None = None
) -> HTMLResponse:
    return render(request, "deployment.html", **views.deployment_page(session, deployment_id, after))


@router.get("/console/audit")
def audit_page(request: Request, session: DbSession, operator: SignedIn) -> HTMLResponse:
    access.require(operator, Role.ADMIN)
    return render(request, "audit.html", **views.audit_page(session))


# -- changes -----------------------------------------------------------------------------------------------------

_SPLIT = re.compile(r"[\s,]+")
_NUMBERS = ("canary", "first_wave", "growth", "dwell_s")
_GATES = ("min_inferences", "min_devices", "max_error_rate", "max_p95_ratio", "max_prediction_psi")


def rollout_request(fields: dict[str, str]) -> Any:
    """The form as the API's RolloutCreate (pydantic checks every bound); blank fields keep their defaults."""
    from cloud.api.schemas import RolloutCreate

    labels = {}
    for item in _SPLIT.split(fields.get("labels", "").strip()):
        if item:
            key, _sep, value = item.partition("=")
            labels[key] = value
    deployment: dict[str, Any] = {
        "model_id": fields.get("model_id", "").strip(), "version": fields.get("version", "").strip() or None,
        "device_ids": [d for d in _SPLIT.split(fields.get("devices", "").strip()) if d], "labels": labels,
    }  # fmt: skip
    rollout: dict[str, Any] = {"strategy": fields.get("strategy") or "canary",
                               "on_breach": fields.get("on_breach") or "rollback"}  # fmt: skip
    rollout.update({k: fields[k].strip() for k in _NUMBERS if fields.get(k, "").strip()})
    rollout["gates"] = {k: fields[k].strip() for k in _GATES if fields.get(k, "").strip()}
    return RolloutCreate.model_validate({"deployment": deployment, "rollout": rollout})


def _form_errors(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()][:10]


@router.post("/console/rollouts/plan")
def plan_rollout(request: Request, session: DbSession, operator: SignedIn, fields: Form) -> HTMLResponse:
    """The dry run: the waves this form would get, shown above the same form with a Start button."""
    from cloud.rollout.staged import preview

    access.require(operator, Role.DEPLOYER)
    context = views.rollouts_page(session)
    try:
        body = rollout_request(fields)
        staged = preview(session, body.deployment, body.rollout)
    except ValidationError as exc:
        return render(request, "rollouts.html", 422, **context, values=fields, errors=_form_errors(exc))
    except CloudError as exc:
        return render(request, "rollouts.html", exc.status_code, **context, values=fields, errors=[str(exc)])
    plan = {"model_id": staged.model_id, "version": staged.version, "targets": staged.targets,
            "waves": staged.plan.waves, "skipped": {k: v.value for k, v in staged.plan.skipped.items()}}  # fmt: skip
    return render(request, "rollouts.html", **context, values=fields, plan=plan)


@router.post("/console/rollouts")
def start_rollout(request: Request, session: DbSession, operator: SignedIn, fields: Form) -> Response:
    from cloud.db.tables import Deployment

    access.require(operator, Role.DEPLOYER)
    services = request.app.state.services
    try:
        body = rollout_request(fields)
    except ValidationError as exc:
        return render(request, "rollouts.html", 422, **views.rollouts_page(session), values=fields,
                      errors=_form_errors(exc))  # fmt: skip
    if services.rollouts is None:
        raise ConfigurationError("this cloud process runs no rollout controller")

    def audit_row(own: Session, deployment: Deployment) -> None:
        audit.record_by(own, operator, "rollout.create", deployment.id, {
            "model_id": deployment.model_id, "version": deployment.version, "devices": len(body.deployment.device_ids),
            "labels": body.deployment.labels, "rollout": body.rollout.model_dump(), "via": "console",
        })  # fmt: skip

    try:
        deployment = services.deployer.deploy(body.deployment, session=session, before_commit=audit_row,
                                              staged=body.rollout)  # fmt: skip
    except CloudError as exc:
        session.rollback()
        return render(request, "rollouts.html", exc.status_code, **views.rollouts_page(session), values=fields,
                      errors=[str(exc)])  # fmt: skip
    deployment_id = deployment.id
    session.commit()  # end this transaction: on SQLite it holds the write lock the controller's step needs
    services.rollouts.step(deployment_id)
    return RedirectResponse(f"/console/rollouts/{quote(deployment_id)}?done=start", status_code=303)


@router.post("/console/rollouts/{deployment_id}/{action}")
def steer_rollout(
    request: Request, session: DbSession, operator: SignedIn, fields: Form, deployment_id: str, action: str
) -> Response:
    """pause, resume, cancel or rollback, through the controller as the API does (with its audit row)."""
    access.require(operator, Role.DEPLOYER)
    if action not in ROLLOUT_ACTIONS:
        raise NotFoundError(f"no rollout action {action!r}")
    controller = request.app.state.services.rollouts
    if controller is None:
        raise ConfigurationError("this cloud process runs no rollout controller")
    views.rollout_page(session, deployment_id)  # 404 for an unknown rollout
    session.commit()  # end this session's transaction: on SQLite it holds the write lock the controller needs

    def audit_row(own: Session) -> None:
        audit.record_by(own, operator, f"rollout.{action}", deployment_id, {"via": "console"})

    getattr(controller, action)(deployment_id, operator.actor, before_commit=audit_row)
    return RedirectResponse(f"/console/rollouts/{quote(deployment_id)}?done={action}", status_code=303)


@router.get("/console/{rest:path}")
def unknown_page(request: Request, _operator: SignedIn, rest: str) -> HTMLResponse:
    return error_page(request, 404, f"no console page /console/{rest}")
