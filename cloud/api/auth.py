"""Who may call what: the bearer-token check every /api/v1 route passes through.

Each router under /api/v1 is built by `api_router(minimum=...)`, which attaches one `Authorize` dependency:
reads (GET, HEAD) need the router's minimum role (viewer by default), every other method needs at least
deployer, and admin routers (tokens, audit) need admin for everything. A route anyone may call (only
`POST /api/v1/enroll`, where a device spends its enrollment token) is built by `public_router()`, which
says so with the `Public` marker. `GET /metrics` lives outside /api/v1 (where scrapers look) yet is guarded
the same way: `ScrapeAuthorize` wants a viewer token unless settings leave it open (`metrics_needs_token`).
`check_routes` refuses an app with an /api/v1 or /metrics route that has neither, so a route cannot be
added without a role decision.
An unknown, revoked or expired token, or none, is a 401 with `WWW-Authenticate: Bearer`; a role too
low is a 403.

The check is async and keeps what the database said of a token id for `api_token_cache_s` (2 s; the
secret is still hashed and compared on every request), so a request whose route needs no database takes
no session and no worker thread. Revoking through the API forgets the id at once; a revocation made
elsewhere (`edgefleet tokens revoke` on the database, another cloud process) takes effect within that time.
Made-up tokens cannot make it look ids up without end: an id of the issued shape with a tag the cloud did
not make is refused without a lookup, so is a token refused before, and lookups of untagged ids (issued
before tags) this process has not admitted come out of a budget per client address, past which the answer
is 429 with Retry-After (`cloud.api.auth_budget`, `cloud.identity.token_tags`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import fastapi.routing
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool

from cloud.api.auth_budget import AuthBudget
from cloud.api.deps import READ_METHODS, AppServices, read_in_thread
from cloud.api.read_cache import ReadCache
from cloud.errors import ConfigurationError, ForbiddenError, NotAuthenticatedError
from cloud.identity.tokens import Operator, Role, TokenRecord, find_token, verdict
from cloud.token_buckets import client_address

API_PREFIX = "/api/v1"
SCRAPE_PATHS = frozenset({"/metrics"})  # operator routes outside API_PREFIX, walked by api_routes too


class BearerRequired(NotAuthenticatedError):
    """A 401 that tells the client which scheme to use (RFC 6750)."""

    headers = {"WWW-Authenticate": "Bearer"}


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


class Authorize:
    """The dependency: authenticate the bearer token, then require `minimum` (or deployer to mutate)."""

    def __init__(self, minimum: Role = Role.VIEWER) -> None:
        self.minimum = minimum

    def required_for(self, method: str) -> Role:
        if method.upper() in READ_METHODS:
            return self.minimum
        return max(self.minimum, Role.DEPLOYER, key=lambda role: role.rank)

    def waived(self, request: Request) -> bool:
        """True when configuration opens the route to anyone (never, here; see ScrapeAuthorize)."""
        return False

    async def __call__(self, request: Request) -> Operator | None:
        if self.waived(request):
            return None
        token = bearer_token(request)
        operator = await authenticate_cached(request, token) if token else None
        if operator is None:
            raise BearerRequired(
                "an API token is required: send 'Authorization: Bearer ef_...' (edgefleet tokens create)"
                if token is None
                else "the API token is unknown, revoked or expired"
            )
        required = self.required_for(request.method)
        if not operator.role.allows(required):
            raise ForbiddenError(f"{request.method} {request.url.path} needs the {required} role; "
                                 f"token {operator.token_id} is {operator.role}")
        request.state.operator = operator
        request.state.required_role = required  # what cloud.api.fast_reads checks a repeated GET against
        return operator


async def authenticate_cached(request: Request, token: str) -> Operator | None:
    """cloud.identity.tokens.authenticate with the token id's record from the app's token cache, within the
    client address's budget of lookups (cloud.api.auth_budget: TooManyRequestsError past it)."""
    budget = AuthBudget.of(request.app)
    services: AppServices = request.app.state.services
    if budget.tags.stale():  # first use, then once a minute (cloud.identity.token_tags)
        await run_in_threadpool(budget.tags.reload, services.engine)
    parsed = budget.admissible(token)
    if parsed is None:
        return None
    token_id, secret = parsed
    client = client_address(request.scope)
    cache: ReadCache[TokenRecord | None] = request.app.state.token_cache

    async def load() -> TokenRecord | None:
        budget.charge(client, token_id)  # per lookup, not per request: concurrent requests share one load
        return await read_in_thread(services, lambda session: find_token(session, token_id))

    operator = verdict(await cache.get(token_id, load), secret)
    budget.judged(token, token_id, operator)
    return operator


class ScrapeAuthorize(Authorize):
    """Authorize(viewer) for Prometheus (a bearer token file), waived when settings leave /metrics open
    for a scraper on a trusted network (`CloudSettings.metrics_needs_token`)."""

    def waived(self, request: Request) -> bool:
        return not request.app.state.settings.metrics_needs_token


class Public:
    """The marker of a route that needs no operator token: a decision made on purpose, visible to
    check_routes (the route authenticates its caller some other way, e.g. by an enrollment token)."""

    def __call__(self) -> None:
        return None


def public_router(*, prefix: str = "", tags: list[str]) -> APIRouter:
    """A router for /api/v1 whose routes anyone may call; each must check its caller itself."""
    return APIRouter(prefix=prefix, tags=list(tags), dependencies=[Depends(Public())])


def api_router(*, prefix: str = "", tags: list[str], minimum: Role = Role.VIEWER) -> APIRouter:
    """A router for /api/v1 whose every route passes `Authorize(minimum)`."""
    return APIRouter(prefix=prefix, tags=list(tags), dependencies=[Depends(Authorize(minimum))])


def current_operator(request: Request) -> Operator:
    """The operator `Authorize` admitted (it runs first: router dependencies precede the route's own)."""
    operator = getattr(request.state, "operator", None)
    if operator is None:
        raise ConfigurationError(f"{request.url.path} reads the operator but has no Authorize dependency")
    return operator  # type: ignore[no-any-return]


OperatorDep = Annotated[Operator, Depends(current_operator)]


@dataclass(frozen=True)
class RouteInfo:
    path: str
    methods: frozenset[str]
    authorizer: Authorize | None  # the Authorize among its dependencies (router or route level)
    public: bool = False  # built by public_router: open on purpose


def _iter_effective(app: FastAPI) -> Iterator[Any]:
    # FastAPI >= 0.160 keeps included routers as _IncludedRouter entries in app.routes and resolves each
    # route's prefix and router dependencies lazily; iter_route_contexts yields those effective routes
    # (older versions copy them into app.routes as APIRoutes).
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    yield from (iter_contexts(app.routes) if iter_contexts is not None else app.routes)


def api_routes(app: FastAPI) -> list[RouteInfo]:
    """Every route under /api/v1, and /metrics, as served (prefixes and router dependencies applied)."""
    found = []
    for route in _iter_effective(app):
        path, dependant = getattr(route, "path", None), getattr(route, "dependant", None)
        if not path or not (path.startswith(API_PREFIX) or path in SCRAPE_PATHS) or dependant is None:
            continue
        authorizer = next((d.call for d in dependant.dependencies if isinstance(d.call, Authorize)), None)
        public = any(isinstance(d.call, Public) for d in dependant.dependencies)
        found.append(RouteInfo(path, frozenset(getattr(route, "methods", None) or ()), authorizer, public))
    return found


def check_routes(app: FastAPI) -> None:
    """Refuse an app with an /api/v1 (or /metrics) route that skips the role check without being marked public."""
    unguarded = [f"{sorted(r.methods)} {r.path}" for r in api_routes(app) if r.authorizer is None and not r.public]
    if unguarded:
        raise ConfigurationError("routes without a role decision (build them with api_router): " + ", ".join(unguarded))
