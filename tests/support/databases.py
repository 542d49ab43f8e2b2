"""Fresh PostgreSQL databases for the hub's tests (one server per session, one database per test)."""

from __future__ import annotations

import itertools

from bench.harness.pg_server import PgServer
from tests.conftest import unavailable

_databases = itertools.count()


def new_database(pg: PgServer | None, prefix: str = "hub") -> str:
    """The URL of a new, empty database on `pg` (skipped, or failed with CI=true, without it)."""
    if pg is None:
        unavailable("PostgreSQL not installed (apt-get install postgresql)")
    import psycopg

    name = f"{prefix}_{next(_databases)}"
    with psycopg.connect(pg.url, autocommit=True) as conn:  # type: ignore[union-attr]
        conn.execute(f"CREATE DATABASE {name}")
    return pg.url.rsplit("/", 1)[0] + f"/{name}"  # type: ignore[union-attr]
