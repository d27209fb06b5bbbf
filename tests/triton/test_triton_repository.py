"""`robot-compress triton-repository`: each twin keeps the contract (tensors, batching, ONNX file,
manifest) and swaps only the platform for Triton's Python backend."""

from __future__ import annotations

import ast
import subprocess
import sys

from robot_compress.edge.triton_repository import MODEL_PY, write_triton_repository
from robot_compress.runtime.model_contract import ModelDir, read_config, sha256_of
from tests.conftest import MODELS, REPO


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_compress.cli", "triton-repository", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_every_shipped_model_gets_a_python_backend_twin(tmp_path):
    result = run_cli(str(MODELS), str(tmp_path / "triton"))
    assert result.returncode == 0, result.stderr
    originals = {m.name: m for m in map(ModelDir.load, sorted(p for p in MODELS.iterdir() if p.is_dir()))}
    assert originals
    for name, original in originals.items():
        assert f"{name}: " in result.stdout
        twin = ModelDir.load(tmp_path / "triton" / name)  # a valid contract directory, sha256 included
        assert twin.manifest == original.manifest
        assert sha256_of(twin.onnx_path) == sha256_of(original.onnx_path)
        config = read_config(twin.root / "config.pbtxt")
        assert config.backend == "python" and config.platform == ""
        assert config.parameters["intra_op_threads"].string_value == "1"
        for field in ("input", "output", "max_batch_size", "dynamic_batching", "instance_group"):
            assert getattr(config, field) == getattr(original.config, field), field
        ast.parse((twin.onnx_path.parent / MODEL_PY).read_text())


def test_threads_go_into_the_config(tmp_path):
    repository = tmp_path / "one"
    repository.mkdir()
    (repository / "cifar10_resnet20").symlink_to(MODELS / "cifar10_resnet20")
    (written,) = write_triton_repository(repository, tmp_path / "out", threads=3)
    assert read_config(written.root / "config.pbtxt").parameters["intra_op_threads"].string_value == "3"


def test_without_dynamic_batching_only_that_block_goes(tmp_path):
    result = run_cli(str(MODELS), str(tmp_path / "out"), "--no-dynamic-batching")
    assert result.returncode == 0, result.stderr
    config = read_config(tmp_path / "out" / "cifar10_resnet56" / "config.pbtxt")
    original = ModelDir.load(MODELS / "cifar10_resnet56").config
    assert not config.HasField("dynamic_batching") and original.HasField("dynamic_batching")
    assert config.max_batch_size == original.max_batch_size and config.backend == "python"


def test_out_dir_equal_to_models_dir_is_refused_and_nothing_changes():
    before = (MODELS / "cifar10_resnet20" / "config.pbtxt").read_text()
    result = run_cli(str(MODELS), str(MODELS))
    assert result.returncode == 2 and "would overwrite the original model directory" in result.stderr
    assert (MODELS / "cifar10_resnet20" / "config.pbtxt").read_text() == before


def test_missing_or_empty_models_dir_is_a_clear_error(tmp_path):
    result = run_cli(str(tmp_path / "nope"), str(tmp_path / "out"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = run_cli(str(tmp_path), str(tmp_path / "out"))
    assert result.returncode == 2 and "holds no model directories" in result.stderr


def test_a_corrupt_model_stops_the_command_before_anything_is_written(tmp_path):
    repository = tmp_path / "repo"
    source = MODELS / "cifar10_resnet20"
    target = repository / source.name
    (target / "1").mkdir(parents=True)
    for name in ("manifest.json", "config.pbtxt"):
        (target / name).write_bytes((source / name).read_bytes())
    onnx = bytearray((source / "1" / "model.onnx").read_bytes())
    onnx[-1] ^= 0xFF
    (target / "1" / "model.onnx").write_bytes(bytes(onnx))
    result = run_cli(str(repository), str(tmp_path / "out"))
    assert result.returncode == 2 and "sha256 mismatch" in result.stderr
    assert not (tmp_path / "out").exists()
