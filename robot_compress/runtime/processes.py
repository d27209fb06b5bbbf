"""Child processes started with a log file and stopped politely: SIGINT (what ROS nodes and the
edge server shut down cleanly on), then SIGTERM, then SIGKILL, each after a grace period.

Every child leads its own process group, so a signal reaches its own children too (a ROS launch,
`ip netns exec`), and a Ctrl-C in the terminal reaches only the parent, which stops them in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from robot_compress.runtime.polling import wait_until

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, for a child to serve on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: Sequence[str], log: Path | None = None, env: Mapping[str, str] | None = None,
          cwd: Path | None = None, **popen) -> subprocess.Popen:
    """Start `command` as the leader of a new process group; stdout and stderr appended to `log`
    (a pipe nobody reads would block the child once full), or inherited without one."""
    if log is None:
        return subprocess.Popen(list(command), env=env, cwd=cwd, start_new_session=True, **popen)
    with open(log, "ab") as out:
        return subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True, **popen)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send `sig` to a child started by `start` and its own children (it leads their group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def stop(procs: subprocess.Popen | Iterable[subprocess.Popen], grace_s: float = 10.0,
         signals: Sequence[int] = STOP_SIGNALS) -> None:
    """Stop every child: each signal of `signals` in turn to those still running, all at once,
    then up to `grace_s` for them to exit. A frozen child gets SIGCONT first: it could not act
    on the signal otherwise. SIGKILL ends the list if it does not already. Returns once all
    have exited (their `returncode` is set)."""
    procs = [procs] if isinstance(procs, subprocess.Popen) else list(procs)
    if signals[-1] != signal.SIGKILL:
        signals = (*signals, signal.SIGKILL)
    for sig in signals:
        alive = [proc for proc in procs if proc.poll() is None]
        if not alive:
            break
        for proc in alive:
            signal_group(proc, signal.SIGCONT)
            signal_group(proc, sig)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda alive=alive: all(proc.poll() is not None for proc in alive), grace_s,
                       interval_s=0.05)
    for proc in procs:
        proc.wait()
