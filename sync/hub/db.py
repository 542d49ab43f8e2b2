"""The hub's SQL connection: SQLite (a file) or PostgreSQL (a URL), behind one small interface.

The hub store writes portable SQL with `?` placeholders; this module turns it into what each
driver wants (`%s` for psycopg, `BYTEA` for `BLOB`) and gives both the same transaction shape:
`with db.transaction(): ...` is one atomic unit that also serialises writers (SQLite `BEGIN
IMMEDIATE`; PostgreSQL row locks taken by `SELECT ... FOR UPDATE`, which `for_update()` adds
only there). Several `hub serve` instances may share one PostgreSQL database (or one SQLite
file on one machine); the store's transactions are what keep their ingest consistent.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge.errors import ConfigError, FacegateError

_LOG = logging.getLogger(__name__)


class HubDbError(FacegateError):
    """The hub database cannot be opened or a statement failed."""


class HubDb:
    def __init__(self, url: str, default_path: Path) -> None:
        self.url = url
        self.kind = "postgresql" if url.startswith(("postgresql://", "postgres://")) else "sqlite"
        self._lock = threading.RLock()  # one connection, used by the MQTT thread and the web thread
        self._depth = 0
        if self.kind == "postgresql":
            try:
                import psycopg
            except ImportError as exc:  # the extra is optional: SQLite needs nothing
                raise ConfigError("hub.database: a postgresql:// URL needs psycopg (pip install 'facegate[hub-postgres]')") from exc
            try:
                self._conn: Any = psycopg.connect(url, autocommit=True)
            except psycopg.Error as exc:
                raise HubDbError(f"hub.database: cannot connect to PostgreSQL ({str(exc).strip()[:200]})") from exc
            self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        else:
            path = Path(url.removeprefix("sqlite:///")) if url else default_path
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                # Made 0600 before SQLite makes it with the umask (its -wal and -shm take the
                # file's mode): persons' uids, groups and the fleet's audit trail, in a data_dir
                # the operator may have created world-readable.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
                self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                # A deleted or overwritten cell (an erased person's wrapped key) is zeroed, not
                # left in the page's free space; `checkpoint()` then empties the WAL.
                self._conn.execute("PRAGMA secure_delete=ON")
            except (sqlite3.Error, OSError) as exc:
                raise HubDbError(f"hub database {path}: {exc}") from exc
            self._errors = (sqlite3.Error,)

    def _sql(self, sql: str) -> str:
        if self.kind == "postgresql":
            return sql.replace("?", "%s").replace(" BLOB", " BYTEA")
        return sql

    def for_update(self) -> str:
        return " FOR UPDATE" if self.kind == "postgresql" else ""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                cur = self._conn.execute(self._sql(sql), tuple(params))
                rows = cur.fetchall() if cur.description is not None else []
            except self._errors as exc:
                raise HubDbError(f"hub database: {str(exc).strip()[:300]}") from exc
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self._lock:
            try:
                if self.kind == "postgresql":
                    with self._conn.cursor() as cur:
                        cur.executemany(self._sql(sql), rows)
                else:
                    self._conn.executemany(sql, rows)
            except self._errors as exc:
                raise HubDbError(f"hub database: {str(exc).strip()[:300]}") from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:  # nested: part of the outer unit
                yield
                return
            self._depth += 1
            try:
                if self.kind == "postgresql":
                    with self._conn.transaction():
                        yield
                else:
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    self._conn.execute("COMMIT")
            except self._errors as exc:
                raise HubDbError(f"hub database: {str(exc).strip()[:300]}") from exc
            finally:
                self._depth -= 1

    def checkpoint(self) -> None:
        """SQLite: move every WAL page into the file and truncate the WAL (old page images of an
        erased row live there until then). PostgreSQL: nothing to do here (docs/hub.md, erasure)."""
        if self.kind != "sqlite":
            return
        busy, frames, done = self.execute("PRAGMA wal_checkpoint(TRUNCATE)")[0]
        if busy or frames != done:
            _LOG.warning("hub database: WAL checkpoint incomplete (%s of %s frames; another process is reading); old pages stay in the WAL "
                         "until the next checkpoint", done, frames)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
