"""connect_with_extensions: the stdlib first, then pysqlite3, then apsw, else a typed error."""

from __future__ import annotations

import logging
import sqlite3
import sys
from types import ModuleType, SimpleNamespace

import pytest

from edge.errors import GalleryError
from edge.gallery import sqlite_ext
from edge.gallery.sqlite_ext import connect_with_extensions


class _NoExtensionLoading:
    """A connection as pyenv's sqlite3 makes it: no enable_load_extension at all."""

    closed = False

    def close(self) -> None:
        self.closed = True


def _stdlib_without_extensions() -> SimpleNamespace:
    return SimpleNamespace(connect=lambda path, isolation_level=None: _NoExtensionLoading(), Error=sqlite3.Error)


def _bindings(monkeypatch: pytest.MonkeyPatch, available: dict[str, object]) -> None:
    def fake_import(module: str) -> ModuleType:
        if module not in available:
            raise sqlite_ext._Unusable("not installed")
        return available[module]  # type: ignore[return-value]

    monkeypatch.setattr(sqlite_ext, "_import", fake_import)


def test_this_python_loads_sqlite_vec_in_memory_only() -> None:
    conn = connect_with_extensions()
    (version,), = conn.execute("SELECT vec_version()").fetchall()
    assert version.startswith("v0.")
    assert conn.execute("PRAGMA temp_store").fetchall() == [(2,)]  # 2 = MEMORY
    conn.close()


def test_falls_back_to_pysqlite3_when_stdlib_cannot_load(monkeypatch, caplog) -> None:
    _bindings(monkeypatch, {"sqlite3": _stdlib_without_extensions(), "pysqlite3.dbapi2": sqlite3})
    with caplog.at_level(logging.DEBUG, logger="edge.gallery.sqlite_ext"):
        conn = connect_with_extensions()
    assert conn.execute("SELECT vec_length(vec_bit(X'FF'))").fetchall() == [(8,)]
    assert "through pysqlite3" in caplog.text


def test_falls_back_to_apsw(monkeypatch, caplog) -> None:
    apsw = SimpleNamespace(Connection=lambda path: sqlite3.connect(path), Error=sqlite3.Error)
    _bindings(monkeypatch, {"sqlite3": _stdlib_without_extensions(), "apsw": apsw})
    with caplog.at_level(logging.DEBUG, logger="edge.gallery.sqlite_ext"):
        conn = connect_with_extensions()
    assert conn.execute("SELECT vec_length(vec_bit(X'FF'))").fetchall() == [(8,)]
    assert "through apsw" in caplog.text


def test_a_binding_whose_sqlite_refuses_the_extension_is_skipped(monkeypatch) -> None:
    class Refusing:
        def __init__(self) -> None:
            self.closed = False

        def enable_load_extension(self, on: bool) -> None:
            pass

        def load_extension(self, path: str) -> None:
            raise sqlite3.OperationalError("not authorized")

        def close(self) -> None:
            self.closed = True

    refusing = Refusing()
    stdlib = SimpleNamespace(connect=lambda path, isolation_level=None: refusing, Error=sqlite3.Error)
    _bindings(monkeypatch, {"sqlite3": stdlib, "pysqlite3.dbapi2": sqlite3})
    conn = connect_with_extensions()
    assert conn.execute("SELECT vec_version()").fetchall()
    assert refusing.closed


def test_no_usable_binding_says_what_to_install(monkeypatch) -> None:
    _bindings(monkeypatch, {"sqlite3": _stdlib_without_extensions()})
    with pytest.raises(GalleryError) as err:
        connect_with_extensions()
    message = str(err.value)
    assert "sqlite3: built without extension loading" in message
    assert "pysqlite3: not installed" in message and "apsw: not installed" in message
    assert "pip install apsw" in message and "pip install pysqlite3-binary" in message


def test_missing_sqlite_vec_package_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sqlite_vec", None)
    with pytest.raises(GalleryError, match="pip install 'sqlite-vec"):
        connect_with_extensions()
