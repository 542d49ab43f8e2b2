"""Files facegate writes about people are its user's only, whatever the umask it was started with."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.cli.run import open_private
from sync.hub.db import HubDb


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A shell's usual umask (0022: new files world-readable) for the test, then the old one back."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_events_file_is_created_0600(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "events.jsonl"
    with open_private(str(path)) as out:
        out.write("{}\n")
    assert mode(path) == 0o600 and path.read_text() == "{}\n"


def test_an_events_file_left_world_readable_is_narrowed_and_appended_to(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("old\n")
    path.chmod(0o644)
    with open_private(str(path)) as out:
        out.write("new\n")
    assert mode(path) == 0o600 and path.read_text() == "old\nnew\n"


def test_a_fifo_given_as_events_file_keeps_its_mode(tmp_path: Path, open_umask: None) -> None:
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo, 0o640)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a writer on a FIFO needs a reader
    try:
        open_private(str(fifo)).close()
    finally:
        os.close(reader)
    assert mode(fifo) == 0o640


def test_the_hub_database_and_its_wal_are_0600(tmp_path: Path, open_umask: None) -> None:
    db = HubDb("", tmp_path / "hub" / "hub.db")
    db._conn.execute("CREATE TABLE t (x)")
    db._conn.execute("INSERT INTO t VALUES (1)")
    assert mode(tmp_path / "hub" / "hub.db") == 0o600 and mode(tmp_path / "hub" / "hub.db-wal") == 0o600
    db._conn.close()
