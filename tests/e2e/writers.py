"""Concurrent writers with a tenant's own credentials, and the count of what they committed.

A write counts as committed only when its INSERT returned (autocommit): then the
server has committed it and promised it to the client. A write whose connection
broke mid-statement is "uncertain": it may or may not have committed, and is
neither counted as committed nor as lost. Each writer re-reads the tenant's
Secret on every reconnect, as an application that follows the operator's Secret
does; a stubborn one keeps the Secret it started with, as a client that never
re-reads it.
"""

from __future__ import annotations

import dataclasses
import threading

import psycopg

from tenant_operator.dev.wait import wait_for
from tenant_operator.infra.kube import Kube

from .migration_data import tenant_secret

TABLE = "CREATE TABLE writes (id bigserial PRIMARY KEY, writer int NOT NULL, n int NOT NULL, UNIQUE (writer, n))"


@dataclasses.dataclass
class Writer:
    number: int
    follows_secret: bool = True
    attempted: int = 0
    committed: dict[int, int] = dataclasses.field(default_factory=dict)
    """n -> id the server handed out, for each committed INSERT."""
    uncertain: set[int] = dataclasses.field(default_factory=set)
    errors: list[str] = dataclasses.field(default_factory=list)
    duplicate_ids: int = 0


class Writers:
    """Starts writers on a tenant; stop() joins them."""

    def __init__(self, kube: Kube, tenant: str, count: int, stubborn: int = 0):
        self.kube, self.tenant = kube, tenant
        self.first_url = tenant_secret(kube, tenant)["DATABASE_URL"]
        self.writers = [Writer(i, follows_secret=i >= stubborn) for i in range(count)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in self.writers]

    def start(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def committed_total(self) -> int:
        return sum(len(w.committed) for w in self.writers)

    def _url(self, writer: Writer) -> str:
        return tenant_secret(self.kube, self.tenant)["DATABASE_URL"] if writer.follows_secret else self.first_url

    def _run(self, writer: Writer) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                conn = psycopg.connect(self._url(writer), autocommit=True, connect_timeout=3)
            except Exception as error:  # noqa: BLE001 - a move refuses logins for a while: try again
                writer.errors.append(f"connect: {type(error).__name__}: {str(error).strip()[:200]}")
                self._stop.wait(0.05)
                continue
            with conn:
                while not self._stop.is_set():
                    n += 1
                    writer.attempted += 1
                    try:
                        row = conn.execute("INSERT INTO writes (writer, n) VALUES (%s, %s) RETURNING id",
                                           [writer.number, n]).fetchone()
                    except psycopg.errors.UniqueViolation as error:
                        writer.duplicate_ids += 1
                        writer.errors.append(f"insert: {str(error).strip()[:200]}")
                        continue
                    except Exception as error:  # noqa: BLE001 - the session ended: reconnect
                        writer.uncertain.add(n)
                        writer.errors.append(f"insert: {type(error).__name__}: {str(error).strip()[:200]}")
                        break
                    writer.committed[n] = row[0]


@dataclasses.dataclass(frozen=True)
class Count:
    attempted: int
    committed: int
    found: int
    missing: list[tuple[int, int]]
    changed_ids: list[tuple[int, int]]
    phantoms: list[tuple[int, int]]


def count_writes(url: str, writers: Writers) -> Count:
    """Compare what the writers were told was committed with what the tenant's home holds."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT writer, n, id FROM writes").fetchall()
    found = {(writer, n): id_ for writer, n, id_ in rows}
    missing, changed, phantoms = [], [], []
    for w in writers.writers:
        for n, id_ in w.committed.items():
            if (w.number, n) not in found:
                missing.append((w.number, n))
            elif found[(w.number, n)] != id_:
                changed.append((w.number, n))
    promised = {(w.number, n) for w in writers.writers for n in (*w.committed, *w.uncertain)}
    phantoms = [key for key in found if key not in promised]
    return Count(sum(w.attempted for w in writers.writers), writers.committed_total(), len(found), missing, changed,
                 phantoms)


def wait_for_commits(writers: Writers, more_than: int, timeout: float = 60) -> int:
    """Until the writers have committed more than `more_than` rows in all: they are writing now."""
    return wait_for(lambda: writers.committed_total() > more_than and writers.committed_total(), timeout=timeout,
                    interval=0.05, what=f"the writers to commit more than {more_than} rows")
