"""Signals for the processes a fault testbed starts, each the leader of its own process group.

SIGSTOP is asynchronous: kill() returns once the signal is queued, and one of the target's
threads must be scheduled before the group stop reaches the others. Until then a server's
worker threads keep answering; on a loaded CI machine a "frozen" echo server still echoed.
`freeze_group` therefore returns only once every thread of every process in the group is stopped,
so a fault begins when the harness stamps it.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

from robot_compress.runtime.polling import wait_until
from robot_compress.runtime.processes import signal_group

PROC = Path("/proc")
_HALTED = frozenset("TtZX")  # stopped, stopped by a tracer, zombie, dead: none of them runs code


def _stat_fields(stat_path: Path) -> list[str] | None:
    """The fields of a /proc stat file after the command name (which may hold spaces and ')')."""
    try:
        text = stat_path.read_text()
    except OSError:  # gone since the directory was listed
        return None
    return text[text.rindex(")") + 2:].split()


def group_pids(pgid: int) -> list[int]:
    """Every live process whose process group is `pgid`."""
    pids = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(entry / "stat")) and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def running_threads(pids: Iterable[int]) -> list[int]:
    """Thread ids among `pids`' threads that can still run (not stopped, not exited)."""
    running = []
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            for task in (PROC / str(pid) / "task").iterdir():
                fields = _stat_fields(task / "stat")
                if fields is not None and fields[0] not in _HALTED:
                    running.append(int(task.name))
    return running


def wait_until_stopped(pids: Iterable[int], timeout_s: float = 5.0) -> None:
    """Return once no thread of `pids` can run; TimeoutError naming the runners after `timeout_s`."""
    pids = list(pids)
    wait_until(lambda: not running_threads(pids), timeout_s, f"every thread of processes {pids} to stop after SIGSTOP",
               interval_s=0.001, detail=lambda: f"threads {running_threads(pids)} still run")


def freeze_group(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """SIGSTOP the group and wait until all of it has stopped."""
    signal_group(proc, signal.SIGSTOP)
    wait_until_stopped(group_pids(proc.pid), timeout_s)


def thaw_group(proc: subprocess.Popen) -> None:
    signal_group(proc, signal.SIGCONT)
