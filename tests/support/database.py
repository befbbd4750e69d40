"""Test databases: a fresh PostgreSQL schema per test when EDGEFLEET_TEST_DATABASE_URL is set.

Each test gets its own schema `eftest_{unix time}_{random}` and a URL whose connections use it
(`options=-csearch_path=...`), so tests never see each other's rows, also when several engineers' runs
share one database at the same time. Schemas left behind by a crashed run are dropped by the next session
once they are old enough that no run can still be using them.
"""

from __future__ import annotations

import os
import secrets
import time
from urllib.parse import quote, urlsplit

ENV_VAR = "EDGEFLEET_TEST_DATABASE_URL"
SCHEMA_PREFIX = "eftest_"
STALE_AFTER_S = 3600


def postgres_url_from_env() -> str | None:
    """The PostgreSQL URL tests may use, as `postgresql+psycopg://...`, or None when not configured."""
    url = os.environ.get(ENV_VAR, "").strip()
    if not url:
        return None
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    if not url.startswith("postgresql+psycopg://"):
        raise ValueError(f"{ENV_VAR} must be a postgresql:// URL, got {url.split('://')[0]}://...")
    return url


def libpq_url(url: str) -> str:
    """SQLAlchemy's `postgresql+psycopg://` -> the plain `postgresql://` psycopg.connect() accepts."""
    return "postgresql://" + url.split("://", 1)[1]


def new_schema_name(now: float | None = None) -> str:
    return f"{SCHEMA_PREFIX}{int(now if now is not None else time.time())}_{secrets.token_hex(4)}"


def schema_age_s(name: str, now: float | None = None) -> float | None:
    """Seconds since a test schema was named, from the timestamp in its name; None if not ours."""
    if not name.startswith(SCHEMA_PREFIX):
        return None
    stamp = name[len(SCHEMA_PREFIX) :].split("_", 1)[0]
    if not stamp.isdigit():
        return None
    return (now if now is not None else time.time()) - int(stamp)


def with_search_path(url: str, schema: str) -> str:
    """Add `options=-csearch_path={schema}` to a PostgreSQL URL (SQLAlchemy passes it on to libpq)."""
    separator = "&" if urlsplit(url).query else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}', safe='')}"


def create_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def drop_stale_schemas(url: str, older_than_s: float = STALE_AFTER_S) -> list[str]:
    """Drop test schemas older than older_than_s (left by crashed runs); return their names."""
    import psycopg

    dropped: list[str] = []
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (SCHEMA_PREFIX.replace("_", r"\_") + "%",)
        ).fetchall()
        for (name,) in rows:
            age = schema_age_s(name)
            if age is None or age < older_than_s:
                continue
            try:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
                dropped.append(name)
            except psycopg.Error:
                pass  # another run is dropping it at the same moment
    return dropped
