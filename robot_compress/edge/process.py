"""The edge server as a child process on this host: for the benchmarks, the tests and anything
else that needs a real server on loopback without a launch file.

Started and stopped by the process supervisor (log file, SIGINT -> SIGTERM -> SIGKILL); ready
once the server logs that it serves, which it does only after every model has loaded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from robot_compress.runtime import processes as supervisor
from robot_compress.runtime.polling import wait_until
from robot_compress.runtime.processes import free_port

READY_LINE = "event=serving"


class EdgeServerProcess:
    """`python -m robot_compress.edge` serving `repository` on 127.0.0.1, output appended to
    `log_path`. `start()` may be called again after `stop()` or `kill()`: same port, same log."""

    def __init__(self, repository: Path, log_path: Path, *args: str, port: int | None = None):
        self.repository = repository
        self.log_path = log_path
        self.args = list(args)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "robot_compress.edge", "--model-repository", str(self.repository),
                "--host", "127.0.0.1", "--port", str(self.port), *self.args]

    def start(self, timeout_s: float = 30.0) -> EdgeServerProcess:
        """Start and return once it serves; RuntimeError with the log's tail if it exits or
        does not serve within `timeout_s` (it is stopped then)."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        proc = self.proc = supervisor.start(self.command(), self.log_path,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        with contextlib.suppress(TimeoutError):  # reported below, with the log
            wait_until(lambda: proc.poll() is not None or READY_LINE in self.log_text()[offset:], timeout_s,
                       interval_s=0.05)
        if proc.poll() is not None or READY_LINE not in self.log_text()[offset:]:
            self.stop()
            raise RuntimeError(f"edge server did not start (exit {proc.returncode}):\n"
                               f"{self.log_text()[offset:][-3000:]}")
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        """Send `sig` alone (no escalation), e.g. to see how it shuts down on SIGTERM."""
        if self.proc is not None and self.proc.poll() is None:
            supervisor.signal_group(self.proc, sig)

    def stop(self, grace_s: float = 10.0) -> int | None:
        """Stop it politely (a frozen server is thawed first); its exit code."""
        if self.proc is None:
            return None
        supervisor.stop(self.proc, grace_s=grace_s)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would end it."""
        if self.proc is not None:
            supervisor.stop(self.proc, signals=(signal.SIGKILL,))
