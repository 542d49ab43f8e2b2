"""SQLite connections with sqlite-vec loaded, through whichever SQLite binding can load it.

CPython's `sqlite3` loads extensions only when it was built with
`--enable-loadable-sqlite-extensions`: Debian's python3 is, pyenv's and python.org's builds are
not (their connections have no `enable_load_extension`). So the bindings are tried in order:
the standard library, then `pysqlite3` (PyPI `pysqlite3-binary`: the same DB-API with its own
SQLite; wheels for x86-64 Linux only), then `apsw` (wheels for aarch64 too, so the fallback on
a Raspberry Pi). The three share the calls facegate uses: `execute`, `executemany`, `fetchall`,
`close`.

Every connection is in autocommit mode (callers write BEGIN / COMMIT, as apsw requires) and keeps
temporary tables and sort spills in RAM: the search index holds decrypted templates, which must
never reach the disk.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

from edge.errors import GalleryError

_LOGGER = logging.getLogger(__name__)

INSTALL_HINT = (
    "install a SQLite binding that can load extensions into this environment: "
    "`pip install apsw` (any platform) or `pip install pysqlite3-binary` (x86-64 Linux only), "
    "or run facegate with a Python whose sqlite3 can load extensions (Debian's /usr/bin/python3)"
)

# Tried in this order; the value is the module to import.
BINDINGS = {"sqlite3": "sqlite3", "pysqlite3": "pysqlite3.dbapi2", "apsw": "apsw"}


class _Unusable(Exception):
    """This binding cannot give a connection with sqlite-vec; the message says why."""


def _import(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise _Unusable("not installed") from exc


def _load(conn: Any, errors: type[Exception], extension: str) -> None:
    if not hasattr(conn, "enable_load_extension"):
        raise _Unusable("built without extension loading")
    try:
        conn.enable_load_extension(True)
        conn.load_extension(extension)
        # Off again: SQL text must not be able to load libraries through load_extension().
        conn.enable_load_extension(False)
    except errors as exc:
        raise _Unusable(f"cannot load {extension}: {exc}") from exc


def _open(binding: str, path: str, extension: str) -> Any:
    module = _import(BINDINGS[binding])
    conn = module.Connection(path) if binding == "apsw" else module.connect(path, isolation_level=None)
    try:
        _load(conn, module.Error, extension)
    except _Unusable:
        conn.close()
        raise
    return conn


def sqlite_vec_path() -> str:
    try:
        import sqlite_vec
    except ImportError as exc:
        raise GalleryError("the sqlite-vec package is missing: pip install 'sqlite-vec>=0.1.6'") from exc
    return str(sqlite_vec.loadable_path())


def connect_with_extensions(path: str = ":memory:") -> Any:
    """A connection to `path` (default: a private in-memory database) with sqlite-vec loaded.

    Raises GalleryError naming what to install when no binding of this Python can load it.
    """
    extension = sqlite_vec_path()
    problems = []
    for binding in BINDINGS:
        try:
            conn = _open(binding, path, extension)
        except _Unusable as exc:
            problems.append(f"{binding}: {exc}")
            continue
        conn.execute("PRAGMA temp_store=MEMORY")
        _LOGGER.debug("sqlite-vec loaded through %s", binding)
        return conn
    raise GalleryError(f"no SQLite binding here can load sqlite-vec ({'; '.join(problems)}); {INSTALL_HINT}")
