"""Fixtures shared by every test suite: a real PostgreSQL server."""

from __future__ import annotations

import pytest

from tenant_operator.dev.postgres import PostgresServer, start_postgres, stop_postgres


@pytest.fixture(scope="session")
def postgres(tmp_path_factory) -> PostgresServer:
    """A throwaway PostgreSQL server for the whole session, with a superuser DSN."""
    server = start_postgres(tmp_path_factory.mktemp("pg"))
    yield server
    stop_postgres(server, mode="immediate")
