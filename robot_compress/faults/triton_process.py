"""A real NVIDIA Triton (the `tritonserver` bundled in the nvidia-pytriton wheel) in a subprocess
on loopback, serving the Python-backend twin of a model repository.

Same interface as robot_compress.edge.process.EdgeServerProcess (url, port, proc, start, stop, kill,
signal, log_text), so a test can run against either server. Where Triton cannot start, `start`
raises TritonUnavailable with the reason (fixtures turn it into a failure, never a skip).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from robot_compress.edge.triton_server import (
    TritonUnavailable,
    log_errors,
    python_backend_dir,
    remove_shared_memory,
    triton_command,
    triton_environment,
)
from robot_compress.faults.process_group import group_pids, wait_until_stopped
from tests.conftest import free_port

__all__ = ["TritonServerProcess", "TritonUnavailable"]


class TritonServerProcess:
    """tritonserver with its log in a file, in its own process group (server and model stubs)."""

    def __init__(self, repository: Path, workdir: Path, *args: str, port: int | None = None):
        self.repository = repository
        self.workdir = workdir
        self.log_path = workdir / "tritonserver.log"
        self.args = list(args)
        self.port = port or free_port()
        self.shm_prefix = f"rc_triton_{uuid.uuid4().hex[:12]}_"  # this server's shared memory, removed by stop()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        backends = python_backend_dir(self.workdir / "backends")
        return triton_command(self.repository, backends, self.port, shm_prefix=self.shm_prefix, extra=tuple(self.args))

    def start(self, timeout_s: float = 90.0) -> TritonServerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = self.command()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env=triton_environment(), cwd=self.workdir)
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while True:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    code = self.proc.poll()
                    self.stop()
                    raise TritonUnavailable(f"tritonserver did not become ready in {timeout_s:.0f} s (exit {code}); "
                                            f"log {self.log_path}:\n{log_errors(self.log_text())}")
                with contextlib.suppress(grpc.RpcError):
                    if stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=1.0).ready:
                        return self
                time.sleep(0.1)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        """To tritonserver alone; after SIGSTOP, returns once its threads have all stopped."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            if sig == signal.SIGSTOP:
                wait_until_stopped([self.proc.pid])

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (after SIGCONT), then SIGKILL to the whole group; shared memory removed."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout_s)
        self._kill_group()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL to the server and its model stubs at once, as a power cut would."""
        self._kill_group()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 5.0
        while group_pids(self.proc.pid) and time.monotonic() < deadline:  # stubs reaped by init
            time.sleep(0.05)
        remove_shared_memory(self.shm_prefix)
