"""Hub fixtures shared by the store, retention, delta and console tests: one real PostgreSQL per
session (its start costs seconds) and a Hub on SQLite and on a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness.pg_server import PgServer
from edge.config import HubConfig
from sync.hub.service import Hub
from tests.support.databases import new_database


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer | None]:
    server = PgServer.find()
    if server is None:
        yield None
        return
    with server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path, pg: PgServer | None) -> Iterator[Hub]:
    url = new_database(pg) if request.param == "postgresql" else ""
    h = Hub(HubConfig(data_dir=str(tmp_path / "hub"), database=url))
    yield h
    h.close()
