"""A throwaway PostgreSQL server from the machine's binaries, in a temp dir.

Used by the tests and by `tenant-operator dev`. The server listens on
127.0.0.1 at a free port with password (SCRAM) authentication everywhere, so
that tenant roles are checked the way a production server checks them.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tenant_operator.dev.ports import free_port

SUPERUSER = "postgres"


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    data_dir: Path
    bin_dir: Path

    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        return (
            f"host={self.host} port={self.port} dbname={dbname} "
            f"user={user or self.user} password={password or self.password} connect_timeout=5"
        )

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"


def postgres_bin_dir() -> Path:
    """The directory holding initdb and pg_ctl: PG_BIN, else Debian's newest, else PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if debian:
        return Path(debian[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError(
        "PostgreSQL server binaries not found: install them (apt-get install postgresql) "
        "or set PG_BIN to the directory holding initdb and pg_ctl"
    )


def _as_server_user() -> list[str]:
    """initdb and postgres refuse to run as root: run them as an unprivileged user."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"]
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")


def _chown_to_server_user(path: Path) -> None:
    prefix = _as_server_user()
    if prefix:
        user = pwd.getpwnam(prefix[2])
        for root, dirs, files in os.walk(path):
            for entry in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(entry, user.pw_uid, user.pw_gid)


def start_postgres(base_dir: Path | None = None) -> PostgresServer:
    bin_dir = postgres_bin_dir()
    base = Path(base_dir or tempfile.mkdtemp(prefix="tenant-operator-pg-"))
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    data_dir = base / "data"
    password = secrets.token_urlsafe(18)
    pwfile = base / "pwfile"
    pwfile.write_text(password)
    _chown_to_server_user(base)
    run_as = _as_server_user()
    subprocess.run(
        [*run_as, str(bin_dir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
         "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
        check=True, capture_output=True, text=True,
    )
    pwfile.unlink()
    port = free_port()
    _pg_ctl_start(bin_dir, data_dir, port)
    return PostgresServer("127.0.0.1", port, SUPERUSER, password, data_dir, bin_dir)


def _pg_ctl_start(bin_dir: Path, data_dir: Path, port: int) -> None:
    base = data_dir.parent
    # fsync off: a throwaway server for tests and `dev`, never for real data.
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        # What the tests look at: whose sessions connected when, and which functions ran where.
        " -c log_connections=on -c track_functions=pl"
        # Online moves replicate a tenant's tables (infra/replication.py), as a production server may.
        " -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20"
    )
    subprocess.run(
        [*_as_server_user(), str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-o", options,
         "-l", str(base / "server.log"), "-w", "-t", "60", "start"],
        check=True, capture_output=True, text=True,
    )


def stop_postgres(server: PostgresServer, mode: str = "fast") -> None:
    subprocess.run(
        [*_as_server_user(), str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-m", mode, "-w", "stop"],
        check=False, capture_output=True, text=True,
    )


def stop_postgres_in(base_dir: Path) -> None:
    """Stop the server whose data lives under `base_dir` (start_postgres's), if one runs there; immediately."""
    data_dir = base_dir / "data"
    if (data_dir / "postmaster.pid").exists():
        subprocess.run([*_as_server_user(), str(postgres_bin_dir() / "pg_ctl"), "-D", str(data_dir), "-m",
                        "immediate", "-w", "stop"], check=False, capture_output=True, text=True)


def restart_postgres(server: PostgresServer) -> None:
    """Start a stopped server again on the same port and data (for outage tests)."""
    _pg_ctl_start(server.bin_dir, server.data_dir, server.port)


def wait_ready(server: PostgresServer, timeout: float = 30) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(server.dsn()):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
