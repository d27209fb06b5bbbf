"""How to start the `tritonserver` bundled in the nvidia-pytriton wheel on a CPU-only machine.

That Triton (2.51) has its Python backend but no ONNX Runtime backend: it serves the twins that
`robot-compress triton-repository` writes. Used by the tests, the failover and throughput
benchmarks; plain functions, no process management (callers have their own).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from robot_compress.runtime.errors import RobotCompressError

WHEEL = "nvidia-pytriton==0.7.0 (requirements/constraints.txt; `make venv` installs it with --no-deps)"
READY_TEXT = "Started GRPCInferenceService"  # logged once every model loaded and gRPC listens


class TritonUnavailable(RobotCompressError):
    """tritonserver is missing from this environment, or did not become ready."""


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
    """`target`, made a backend directory holding the Python backend with the stub for this
    Python version (the wheel keeps one stub per version apart from the backend)."""
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


def triton_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The stub (the process running model.py) embeds the libpython found first and takes
    sys.prefix from the first `python3` on PATH: this interpreter's, so model.py imports this
    environment's numpy and onnxruntime (the stub ignores PYTHONPATH). The ROS wheels' start-up
    hook must not re-execute the embedded interpreter, which has no argv."""
    base = dict(os.environ if base is None else base)
    _, libs = wheel_paths()
    library_path = [sysconfig.get_config_var("LIBDIR") or "", str(libs), base.get("LD_LIBRARY_PATH", "")]
    return {**base,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")]),
            "LD_LIBRARY_PATH": os.pathsep.join(p for p in library_path if p),
            "_ROS_WHEELS_BOOTSTRAP_COMPLETE": "1"}


def triton_command(repository: Path, backends: Path, port: int, host: str = "127.0.0.1",
                   shm_prefix: str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """tritonserver serving `repository` over gRPC only, on `host:port` (Triton's own default is
    0.0.0.0), accepting the robot's keepalive pings (every 2 s, also between calls)."""
    server_dir, _ = wheel_paths()
    command = [str(server_dir / "bin" / "tritonserver"), "--model-repository", str(repository),
               "--backend-directory", str(backends), "--grpc-address", host, "--grpc-port", str(port),
               "--allow-http", "false", "--allow-metrics", "false",
               "--grpc-keepalive-permit-without-calls", "true",
               "--grpc-http2-min-recv-ping-interval-without-data", "1000", "--grpc-http2-max-ping-strikes", "0",
               "--exit-on-error", "true", "--exit-timeout-secs", "5"]
    if shm_prefix:  # the Python backend's shared memory regions, so a killed server's can be removed
        command.append(f"--backend-config=python,shm-region-prefix-name={shm_prefix}")
    return [*command, *extra]


def remove_shared_memory(shm_prefix: str) -> None:
    """Delete the Python backend's regions a killed server left in /dev/shm."""
    for region in Path("/dev/shm").glob(f"{shm_prefix}*"):
        with contextlib.suppress(OSError):
            region.unlink()


def log_errors(text: str, limit: int = 3000) -> str:
    """A tritonserver log's error lines (a model that failed to load says why there), else its
    tail. CUDA's complaints on a machine without a GPU are left out: they are expected."""
    errors = [line for line in text.splitlines()
              if line.startswith(("E", "error:")) and "Cuda" not in line and "CUDA" not in line]
    return "\n".join(errors)[-limit:] if errors else text[-limit:]
