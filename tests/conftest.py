"""Fixtures shared by every test suite: a real PostgreSQL server."""

from __future__ import annotations

import shutil

import pytest

from tenant_operator.dev.postgres import PostgresServer, start_postgres, stop_postgres


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """A throwaway PostgreSQL server for the whole session, with a superuser DSN.

    Not under pytest's tmp_path: that is private to root, and as root the server
    runs as an unprivileged user who could not enter it.
    """
    server = start_postgres()
    yield server
    stop_postgres(server, mode="immediate")
    shutil.rmtree(server.data_dir.parent, ignore_errors=True)
