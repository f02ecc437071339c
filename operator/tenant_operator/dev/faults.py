"""The operator with a fault injected, for the tests: `python -m tenant_operator.dev.faults run ...`.

`TENANT_OPERATOR_TEST_FAULT` says which, at which point (tenant_operator/faults.py):
- `crash:<step>`: exit at once inside that migration step, as a killed pod would;
- `pause:<step>`: inside that step, write `<TENANT_OPERATOR_TEST_FAULT_DIR>/paused`, then
  wait until a file `resume` appears there (the test stops the process meanwhile);
- `corrupt:copy`: after the copy, delete one copied row in the target, so that
  verification must fail.
Only this entry point reads those variables: the production operator has no way to corrupt data.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as q

from tenant_operator import cli
from tenant_operator.infra import faults

log = logging.getLogger(__name__)


def _hook_for(fault: str, directory: Path):
    action, _, where = fault.partition(":")

    def hook(point: str, details: dict[str, Any]) -> None:
        if action == "crash" and point in (f"step:{where}", "copy:table" if where == "copy" else ""):
            log.warning("fault injection: exiting inside migration step %s", where)
            os._exit(137)
        if action == "pause" and point in (f"step:{where}", "copy:table" if where == "copy" else ""):
            log.warning("fault injection: pausing inside migration step %s", where)
            (directory / "paused").write_text(where)
            while not (directory / "resume").exists():
                time.sleep(0.05)
            log.warning("fault injection: resuming inside migration step %s", where)
        if action == "corrupt" and point == "copy:done" and details.get("table"):
            _corrupt_one_row(details["dsn"], details["schema"], details["table"])

    return hook


def _corrupt_one_row(dsn: str, schema: str, table: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # the row may be referenced: skip FK checks
        name = q.SQL("{}.{}").format(q.Identifier(schema), q.Identifier(table))
        conn.execute(q.SQL("DELETE FROM {} WHERE ctid = (SELECT ctid FROM {} LIMIT 1)").format(name, name))


def main(argv: list[str] | None = None) -> int:
    fault = os.environ.get("TENANT_OPERATOR_TEST_FAULT")
    if fault:
        directory = Path(os.environ.get("TENANT_OPERATOR_TEST_FAULT_DIR") or ".")
        faults.install(_hook_for(fault, directory))
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
