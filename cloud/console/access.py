"""Who is looking at the console, and whether a form post really comes from it.

An operator signs in by pasting an API token; it is checked exactly as the API checks a bearer token
(`cloud.identity.tokens.authenticate`) and then kept in a cookie that scripts cannot read (HttpOnly), that
no other site's page sends (SameSite=Strict), and that travels only over https when the console is served
over https (Secure). Every page authenticates from that cookie again, so a revoked or expired token stops
working at once. Both checks share the API's budget of token lookups per client address, so made-up
cookies or pasted tokens cannot flood the database either. A POST must also name the console's own origin
in Origin (or, lacking it, Referer): a second, independent guard against cross-site requests.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request, Response
from sqlmodel import Session

from cloud.api.auth_budget import AuthBudget
from cloud.identity.tokens import Operator, Role, authenticate
from cloud.token_buckets import client_address

COOKIE = "edgefleet_console"
COOKIE_PATH = "/console"
MAX_AGE_S = 12 * 3600  # the browser forgets the token after a working day; the token itself may live longer
MAX_TOKEN_CHARS = 200


class SignInRequired(Exception):
    """No cookie, or one whose token no longer works: the page sends the browser to the sign-in form."""


class RoleTooLow(Exception):
    def __init__(self, operator: Operator, required: Role) -> None:
        super().__init__(f"this needs the {required} role; you are signed in as {operator.role}")
        self.operator, self.required = operator, required


class CrossSiteRequest(Exception):
    """A POST whose Origin/Referer is not this console's."""


def operator_from_cookie(request: Request, session: Session) -> Operator | None:
    return check_token(request, session, request.cookies.get(COOKIE, ""))


def check_token(request: Request, session: Session, token: str) -> Operator | None:
    """The operator a pasted or kept token belongs to, within the same budget of lookups per client
    address as the API's bearer tokens (cloud.api.auth_budget: TooManyRequestsError past it)."""
    token = token.strip()
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    budget = AuthBudget.of(request.app)
    if budget.tags.stale():  # in sessions of its own: it may create the first key and commit it
        budget.tags.reload(request.app.state.services.engine)
    parsed = budget.admissible(token)
    if parsed is None:
        return None
    budget.charge(client_address(request.scope), parsed[0])
    operator = authenticate(session, token)
    budget.judged(token, parsed[0], operator)
    return operator


def require(operator: Operator, role: Role) -> None:
    if not operator.role.allows(role):
        raise RoleTooLow(operator, role)


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def keep_token(response: Response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, token.strip(), max_age=MAX_AGE_S, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=is_https(request))  # fmt: skip


def forget_token(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=is_https(request))


def _origin_of(url: str) -> tuple[str, str] | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return parts.scheme.lower(), parts.netloc.lower()


def same_origin(request: Request) -> bool:
    """Whether a POST came from a page of this console: its Origin (else Referer) is our own scheme and host."""
    own = (request.url.scheme.lower(), (request.headers.get("host") or request.url.netloc).lower())
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return _origin_of(origin) == own
    referer = request.headers.get("referer")
    return bool(referer) and _origin_of(referer or "") == own


def check_same_origin(request: Request) -> None:
    if not same_origin(request):
        raise CrossSiteRequest("this form was not sent from the console's own pages (Origin/Referer mismatch)")


def safe_next(path: str | None) -> str:
    """Where to go after signing in: only a console path (never another site, never `//host`)."""
    if path and path.startswith(COOKIE_PATH) and not path.startswith("//") and "\\" not in path and len(path) < 500:
        return path
    return COOKIE_PATH
