"""A real edge server in a subprocess on loopback, and test model repositories for it.

Importable by other test areas (router, node, faults) that need an edge to talk to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from robot_compress.faults.process_group import wait_until_stopped
from robot_compress.runtime.model_contract import (
    MANIFEST_FILE,
    Manifest,
    Preprocessing,
    TensorSpec,
    write_model_dir,
)
from tests.conftest import free_port

READY_LINE = "event=serving"


class EdgeServerProcess:
    """`python -m robot_compress.edge` with its log in a file (a pipe nobody reads
    would block the server once full). Always stopped by `stop()`, even if frozen."""

    def __init__(self, repository: Path, log_path: Path, *args: str, port: int | None = None):
        self.repository = repository
        self.log_path = log_path
        self.args = list(args)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EdgeServerProcess:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "robot_compress.edge", "--model-repository",
                 str(self.repository), "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout_s
        while READY_LINE not in self.log_text()[offset:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"edge server did not start (exit {self.proc.returncode}):\n"
                                   f"{self.log_text()[offset:][-3000:]}")
            time.sleep(0.05)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        """After SIGSTOP, returns once every server thread has stopped (SIGSTOP is asynchronous)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            if sig == signal.SIGSTOP:
                wait_until_stopped([self.proc.pid])

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM (after SIGCONT, in case a test froze it), SIGKILL if it does not exit."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()


def link_model(source: Path, repository: Path, **config_options) -> Path:
    """A copy of model directory `source` in `repository` that shares its ONNX file (the version
    directory is a symlink) with its own config.pbtxt built from `config_options`."""
    manifest = Manifest.from_json(json.loads((source / MANIFEST_FILE).read_text()))
    target = repository / manifest.name
    target.mkdir(parents=True)
    (target / str(manifest.version)).symlink_to((source / str(manifest.version)).resolve())
    model = write_model_dir(target, manifest, source / str(manifest.version) / "model.onnx", **config_options)
    return model.root


def tiny_model(repository: Path, name: str = "tiny", output: str = "scores", **config_options) -> Path:
    """A real, fast ONNX model with the CIFAR input but a different output ('scores', 3 classes):
    the per-channel mean of the image. For answers that do not match the edge model's contract;
    with output="logits" it answers under the edge model's output name, but with the wrong shape."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], [output], axes=[2, 3], keepdims=0)], name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", 3])])
    onnx_path = repository / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), onnx_path)
    manifest = Manifest(name=name, labels=["red", "green", "blue"],
                        input=TensorSpec(name="input", dtype="float32", shape=(3, 32, 32)),
                        output=TensorSpec(name=output, dtype="float32", shape=(3,)),
                        preprocessing=Preprocessing(input_size=(32, 32), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))
    root = write_model_dir(repository / name, manifest, onnx_path, **config_options).root
    onnx_path.unlink()
    return root
