"""The cloud's database: engines for SQLite and PostgreSQL (`engine`), the tables (`tables`), the values
their status columns may hold (`statuses`) and the SQL helpers every part shares (`sql`: fetch-or-raise,
insert-or-ignore, IN lists, retryable conflicts). Nothing here knows a business rule; the parts above it do.
"""

from cloud.db.engine import create_tables, drop_schema, make_engine, normalise_database_url, read_only, session_scope
from cloud.db.sql import among, fetch_or_raise, insert_ignore, is_retryable_conflict
from cloud.db.statuses import DeploymentStatus, RolloutState, RunStatus, TargetStatus

__all__ = [
    "DeploymentStatus",
    "RolloutState",
    "RunStatus",
    "TargetStatus",
    "among",
    "create_tables",
    "drop_schema",
    "fetch_or_raise",
    "insert_ignore",
    "is_retryable_conflict",
    "make_engine",
    "normalise_database_url",
    "read_only",
    "session_scope",
]
