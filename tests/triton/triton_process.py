"""A real NVIDIA Triton (the `tritonserver` bundled in the nvidia-pytriton wheel) in a subprocess
on loopback, serving the Python-backend twin of a model repository.

Same interface as tests/edge/edge_process.EdgeServerProcess (url, port, proc, start, stop, kill,
signal, log_text), so a test can run against either server. Where Triton cannot start, `start`
raises TritonUnavailable with the reason (fixtures turn it into a failure, never a skip).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from robot_compress.faults.process_group import group_pids, wait_until_stopped
from tests.conftest import free_port

WHEEL = "nvidia-pytriton==0.7.0 (requirements/constraints.txt; `make venv` installs it with --no-deps)"
SHM = Path("/dev/shm")


class TritonUnavailable(RuntimeError):
    """tritonserver is missing from this environment or did not become ready."""


def wheel_paths() -> tuple[Path, Path]:
    """(the wheel's tritonserver/ directory, its bundled shared libraries)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonUnavailable(f"the pytriton package is not installed: {WHEEL}")
    package = Path(next(iter(spec.submodule_search_locations)))
    server_dir, libs = package / "tritonserver", package.parent / "nvidia_pytriton.libs"
    for needed in (server_dir / "bin" / "tritonserver", server_dir / "backends" / "python", libs):
        if not needed.exists():
            raise TritonUnavailable(f"{needed} is missing: reinstall {WHEEL}")
    return server_dir, libs


def python_backend_dir(target: Path) -> Path:
    """A backend directory holding the Python backend with the stub for this Python version."""
    server_dir, _ = wheel_paths()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        available = sorted(p.name for p in (server_dir / "python_backend_stubs").iterdir())
        raise TritonUnavailable(f"the wheel has no Python backend stub for Python {version} (it has {available})")
    backend = target / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for source in (*(server_dir / "backends" / "python").glob("*.*"), stub):
        if source.is_file():
            shutil.copy2(source, backend / source.name)
    return target


def triton_environment() -> dict[str, str]:
    """The stub embeds the libpython found first and takes sys.prefix from the first `python3` on
    PATH: this interpreter's, so model.py imports this environment's numpy and onnxruntime. The ROS
    wheels' start-up hook must not re-execute the embedded interpreter (it has no argv)."""
    _, libs = wheel_paths()
    library_path = [sysconfig.get_config_var("LIBDIR") or "", str(libs), os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "LD_LIBRARY_PATH": os.pathsep.join(p for p in library_path if p),
            "_ROS_WHEELS_BOOTSTRAP_COMPLETE": "1"}


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
        server_dir, _ = wheel_paths()
        backends = python_backend_dir(self.workdir / "backends")
        return [str(server_dir / "bin" / "tritonserver"), "--model-repository", str(self.repository),
                "--backend-directory", str(backends),
                f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
                "--grpc-address", "127.0.0.1", "--grpc-port", str(self.port),
                "--allow-http", "false", "--allow-metrics", "false",
                # The robot pings every 2 s, also between calls (docs/EDGE.md).
                "--grpc-keepalive-permit-without-calls", "true",
                "--grpc-http2-min-recv-ping-interval-without-data", "1000", "--grpc-http2-max-ping-strikes", "0",
                "--exit-on-error", "true", "--exit-timeout-secs", "5", *self.args]

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
                                            f"log {self.log_path}:\n{self.failure_lines()}")
                with contextlib.suppress(grpc.RpcError):
                    if stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=1.0).ready:
                        return self
                time.sleep(0.1)

    def failure_lines(self, limit: int = 3000) -> str:
        """The log's error lines (a model that failed to load says why there), else its tail. CUDA's
        complaints on a machine without a GPU are left out: they are expected."""
        text = self.log_text()
        errors = [line for line in text.splitlines()
                  if line.startswith(("E", "error:")) and "Cuda" not in line and "CUDA" not in line]
        return "\n".join(errors)[-limit:] if errors else text[-limit:]

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
        for region in SHM.glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                region.unlink()
