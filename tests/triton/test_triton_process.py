"""Where the real Triton cannot serve, the reason reaches the test run (a failure, never a skip)."""

from __future__ import annotations

import importlib.util

import pytest

from robot_compress.edge import triton_server
from robot_compress.edge.triton_repository import write_triton_repository
from robot_compress.faults.triton_process import TritonServerProcess, TritonUnavailable
from tests.conftest import MODELS


def test_a_twin_whose_onnx_file_changed_is_refused_with_the_reason(tmp_path):
    repository = tmp_path / "models"
    repository.mkdir()
    (repository / "cifar10_resnet20").symlink_to(MODELS / "cifar10_resnet20")
    (twin,) = write_triton_repository(repository, tmp_path / "twin")
    onnx = twin.root / "1" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\0")
    server = TritonServerProcess(tmp_path / "twin", tmp_path / "triton")
    with pytest.raises(TritonUnavailable, match="did not become ready") as caught:
        server.start(timeout_s=60)
    assert "sha256 mismatch" in str(caught.value)
    assert server.proc.poll() is not None


def test_without_the_wheel_the_reason_names_it(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(triton_server.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pytriton" else real(name, *a))
    with pytest.raises(TritonUnavailable, match="nvidia-pytriton==0.7.0"):
        TritonServerProcess(tmp_path, tmp_path / "triton").start()
