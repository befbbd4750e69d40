"""The web console: pages served by the cloud itself under /console (and / redirects there).

Works with no internet: server-rendered HTML (`templates/`), charts drawn as inline SVG on the server
(`charts`), one stylesheet and a few lines of script served from the package (`static/`). `access` signs
operators in with an API token kept in an HttpOnly, SameSite=Strict cookie and checks that forms come from
the console's own pages; `views` reads what each page shows with bounded queries; `pages` holds the routes.
"""

from __future__ import annotations

from fastapi import FastAPI


def mount_console(app: FastAPI) -> None:
    """Serve the console from `app` (which carries `state.services`, as `cloud.api.create_app` builds it)."""
    from cloud.console.pages import router

    app.include_router(router)


__all__ = ["mount_console"]
