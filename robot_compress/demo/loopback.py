"""The fault testbed's process interface on this host's loopback: no namespaces, no root.

`faults.experiment.ScenarioRun` starts and signals processes through a testbed; this one runs
them directly, so the demo works for any user. Link faults come from the fault proxy instead
of iptables or a veth link.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Sequence

from robot_compress.faults.process_group import freeze_group, thaw_group
from robot_compress.runtime import processes
from robot_compress.runtime.processes import signal_group


class LoopbackBed:
    """Runs the robot and edge processes on this host; every process leads its own group so a
    signal reaches its children, and `close()` ends them all (also after Ctrl-C)."""

    edge_ip = "127.0.0.1"

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen] = []
        self.started: list[dict] = []  # every process ever started: {"pid", "program"}, for the summary
        self._lock = threading.Lock()  # the runner thread starts processes while Ctrl-C closes
        self._closed = False

    def __enter__(self) -> LoopbackBed:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def popen(self, side: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"testbed is closed: not starting {argv[0]}")
            proc = processes.start(argv, **kwargs)
            self._procs.append(proc)
            self.started.append({"pid": proc.pid, "program": " ".join(argv[:3])})
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=5)

    def freeze(self, proc: subprocess.Popen) -> None:
        freeze_group(proc)

    def thaw(self, proc: subprocess.Popen) -> None:
        thaw_group(proc)

    def close(self, grace_s: float = 5.0) -> None:
        """SIGINT (ROS nodes shut down cleanly on it), then SIGKILL whatever is left. After this,
        `popen` refuses, so a run still starting processes in another thread cannot leak one."""
        with self._lock:
            self._closed = True
        processes.stop(self._procs, grace_s=grace_s, signals=(signal.SIGINT, signal.SIGKILL))
        self._procs.clear()
