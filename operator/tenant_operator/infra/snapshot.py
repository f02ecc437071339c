"""Snapshots for reclaimPolicy Snapshot: pg_dump of a tenant's data, proven readable.

The dump is pg_dump's custom format: compressed, and pg_restore can restore all
of it or single tables into any database. A shared tenant's dump is its schema
(`--schema`), an isolated tenant's its whole database. A dump counts only once
`pg_restore --list` reads its table of contents back and finds every table the
tenant had: a full disk, a truncated file or a pg_dump that died halfway fails
that check, and then the caller drops nothing.

The file is written as `<name>.partial` and renamed when verified, so a file
without that suffix is a verified dump; it is readable by its owner only (it
holds the tenant's data). The admin password reaches pg_dump through PGPASSWORD,
never the command line, which any user of the machine can read in /proc.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import shutil
import subprocess
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tenant_operator.infra.postgres import SHARED, DataPlacement, TableName

# pg_dump waits this long for a table lock (a long ALTER, a VACUUM FULL) and then
# fails, rather than holding a worker indefinitely; the deletion is retried.
LOCK_WAIT_TIMEOUT = "10s"
_TOC_ENTRY = re.compile(r"^\d+; \d+ \d+ (TABLE DATA|TABLE) (.*)$")


class SnapshotFailed(Exception):
    """No verified dump was written; the message says why, without any password."""


@dataclasses.dataclass(frozen=True)
class Snapshot:
    path: Path
    tables: int
    size: int

    def describe(self) -> str:
        return f"{self.path} ({_human_size(self.size)}, verified with pg_restore --list)"


def snapshot_path(directory: Path, tenant_name: str, at: datetime.datetime) -> Path:
    """`<directory>/<tenant>-<UTC timestamp>.dump`: sorted by time, one per deletion attempt."""
    stamp = at.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return directory / f"{tenant_name}-{stamp}.dump"


def latest_snapshot(directory: Path, tenant_name: str, since: datetime.datetime | None = None) -> Snapshot | None:
    """The newest verified dump of a tenant in `directory` taken at or after `since`, if any:
    how a later pass of the same deletion finds the dump an earlier pass wrote."""
    pattern = re.compile(rf"{re.escape(tenant_name)}-(\d{{8}}T\d{{6}}Z)\.dump")
    floor = since.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ") if since else ""
    found = sorted(path for path in (directory.glob(f"{tenant_name}-*.dump") if directory.is_dir() else [])
                   if (match := pattern.fullmatch(path.name)) and match.group(1) >= floor)
    if not found:
        return None
    return Snapshot(found[-1], tables=0, size=found[-1].stat().st_size)


def tool(name: str, bin_dir: Path | None) -> str:
    """pg_dump or pg_restore: from `bin_dir` when set, else from PATH."""
    if bin_dir is not None:
        candidate = Path(bin_dir) / name
        if not os.access(candidate, os.X_OK):
            raise SnapshotFailed(f"{name} not found in {bin_dir} (setting pg_bin_dir)")
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise SnapshotFailed(f"{name} not found on PATH: install the PostgreSQL client (Debian: postgresql-client) "
                             "or set TENANT_OPERATOR_PG_BIN_DIR")
    return found


def dump_command(pg_dump: str, admin_dsn: str, placement: DataPlacement, path: Path) -> tuple[list[str], dict]:
    """pg_dump's argv and the environment additions; the password is only in the latter."""
    params = conninfo_to_dict(make_conninfo(admin_dsn, dbname=placement.database))
    password = params.pop("password", None)
    argv = [pg_dump, "--format=custom", f"--file={path}", f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT}",
            "--no-password", f"--dbname={make_conninfo('', **params)}"]
    if placement.tier == SHARED:
        # Double quotes make the pattern an exact, case-sensitive name.
        argv.append(f'--schema="{placement.schema}"')
    env = {"PGPASSWORD": str(password)} if password else {}
    if "connect_timeout" not in params:
        env["PGCONNECT_TIMEOUT"] = "10"
    return argv, env


def missing_from_toc(toc: str, tables: list[TableName]) -> list[str]:
    """Tables (and table data) of `tables` that the table of contents does not list."""
    listed: dict[str, set[str]] = {"TABLE": set(), "TABLE DATA": set()}
    for line in toc.splitlines():
        match = _TOC_ENTRY.match(line)
        if match:
            listed[match.group(1)].add(match.group(2))
    missing = []
    for table in tables:
        prefix = f"{table.schema} {table.name} "
        if not any(entry.startswith(prefix) for entry in listed["TABLE"]):
            missing.append(f"{table.schema}.{table.name}")
        elif table.has_data and not any(entry.startswith(prefix) for entry in listed["TABLE DATA"]):
            missing.append(f"{table.schema}.{table.name} (data)")
    return missing


def take_snapshot(admin_dsn: str, placement: DataPlacement, tenant_name: str, tables: list[TableName],
                  directory: Path, bin_dir: Path | None = None, timeout: float = 3600.0,
                  now: datetime.datetime | None = None) -> Snapshot:
    """Dump the placement to `directory` and verify the dump lists `tables`; raise SnapshotFailed otherwise."""
    pg_dump, pg_restore = tool("pg_dump", bin_dir), tool("pg_restore", bin_dir)
    path = snapshot_path(directory, tenant_name, now or datetime.datetime.now(datetime.UTC))
    partial = path.with_name(path.name + ".partial")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    except OSError as error:
        raise SnapshotFailed(f"cannot write to the snapshot directory {directory}: {error.strerror}") from None
    try:
        argv, env = dump_command(pg_dump, admin_dsn, placement, partial)
        _run(argv, env, timeout, secret=env.get("PGPASSWORD"))
        toc = _run([pg_restore, "--list", str(partial)], {}, timeout)
        missing = missing_from_toc(toc, tables)
        if missing:
            raise SnapshotFailed(f"the dump {partial} does not list {', '.join(missing[:5])}")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return Snapshot(path, len(tables), path.stat().st_size)


def _run(argv: list[str], env: dict, timeout: float, secret: str | None = None) -> str:
    name = Path(argv[0]).name
    try:
        result = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SnapshotFailed(f"{name} did not finish within {timeout:.0f}s (setting snapshot_timeout_seconds)") \
            from None
    except OSError as error:
        raise SnapshotFailed(f"cannot run {name}: {error.strerror}") from None
    if result.returncode != 0:
        detail = " ".join(result.stderr.split())[-1000:] or f"exit status {result.returncode}"
        if secret:
            detail = detail.replace(secret, "***")
        raise SnapshotFailed(f"{name} failed: {detail}")
    return result.stdout


def _human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
