"""Finding and ending processes by what they are, from /proc: the last net of `dev`'s clean-up.

`dev` stops what it started in order (operator, control plane, PostgreSQL), by the
handles it recorded. A signal can arrive between a process starting and its handle
being recorded, and `pg_ctl` leaves a postmaster that is nobody's child; so after
the orderly stop, whatever is still a child of `dev`, or still runs from one of its
temp dirs, is ended here. Linux only, as `dev` is.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

PROC = Path("/proc")
GRACE_SECONDS = 10.0


def processes() -> dict[int, tuple[int, str]]:
    """Every process this user may see: pid -> (parent pid, command line)."""
    found: dict[int, tuple[int, str]] = {}
    if not PROC.is_dir():
        return found
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile
            continue
        # The command name (2nd field) may hold spaces and parentheses: the state and ppid follow the last ")".
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            found[int(entry.name)] = (int(ppid), command)
    return found


def end_processes(chosen: Callable[[int, int, str], bool]) -> list[int]:
    """SIGTERM every live process `chosen(pid, ppid, command)` picks (never this one), SIGKILL what outlasts
    GRACE_SECONDS; reap the ones that are our children. Returns the pids it signalled."""
    targets = [pid for pid, (ppid, command) in processes().items() if pid != os.getpid() and chosen(pid, ppid, command)]
    for pid in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while targets and time.monotonic() < deadline:
        _reap()
        alive = processes()
        targets = [pid for pid in targets if pid in alive]
        if targets:
            time.sleep(0.1)
    for pid in targets:
        _signal(pid, signal.SIGKILL)
    _reap()
    return targets


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _reap() -> None:
    """Collect the exit status of children that ended, so that they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
