"""Pages of the lists that grow with the fleet: `limit` and an opaque keyset cursor, the next page in `Link`.

A page ends at a key (a device id, an event's sequence number); the cursor says "after this key" for this
list, so rows inserted while a client pages through never shift a page (offsets would repeat or skip rows):
every row that existed when paging began is on exactly one page, and rows inserted after the cursor show
on a later one. The body stays the JSON list it always was, so a client that ignores paging reads the
first page; the next page's URL is in the `Link: <...>; rel="next"` header (RFC 8288), absent on the last.
The cursor is base64url JSON of (list, key): opaque to clients, checked on the way back in (a cursor of
another list, or text that is not one, is a 422).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar
from urllib.parse import urlencode

from cloud.errors import InvalidRequestError

if TYPE_CHECKING:  # the CLI imports this module (link_next_url) without the web stack
    from starlette.requests import Request

T = TypeVar("T")
K = TypeVar("K", str, int)

# rows a page of a fleet-sized list (devices, a deployment's targets): by default ~375 KB of device JSON
# (~40 KB gzipped); a client may ask for up to MAX_PAGE
DEFAULT_PAGE = 500
MAX_PAGE = 2000


@dataclass(frozen=True)
class Page(Generic[T]):
    rows: list[T]
    next_key: str | int | None  # the last row's key when more may follow, else None


def encode_cursor(listing: str, key: str | int) -> str:
    raw = json.dumps([listing, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(listing: str, cursor: str | None, key_type: type[K]) -> K | None:
    """The key a cursor of `listing` stands for; None for no cursor; InvalidRequestError for anything else."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, key = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidRequestError("the cursor is not one this API gave out: take it from a Link header") from None
    if name != listing or type(key) is not key_type:
        raise InvalidRequestError(f"that cursor belongs to another list than {listing}")
    return key  # type: ignore[no-any-return]


def take_page(rows: Sequence[T], limit: int, key: Callable[[T], str | int]) -> Page[T]:
    """A page from up to limit + 1 rows read in key order: the extra row only says that more follow."""
    if len(rows) > limit:
        kept = list(rows[:limit])
        return Page(kept, key(kept[-1]))
    return Page(list(rows), None)


def next_link(request: Request, listing: str, page: Page[object]) -> tuple[tuple[bytes, bytes], ...]:
    """The `Link` header of the page after this one (the same query with the cursor replaced), or none."""
    if page.next_key is None:
        return ()
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    query.append(("cursor", encode_cursor(listing, page.next_key)))
    url = f"{request.url.path}?{urlencode(query)}"
    return ((b"link", f'<{url}>; rel="next"'.encode()),)


def link_next_url(link_header: str | None) -> str | None:
    """The rel="next" target of a Link header (what a client follows), or None."""
    for part in (link_header or "").split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") and target.strip().startswith("<"):
            return target.strip()[1:-1]
    return None
