"""Model repositories for test edge servers: the shipped edge model under other batching
settings, and tiny models whose answers do not match its contract."""

from __future__ import annotations

import collections
import json
import threading
from pathlib import Path

from robot_compress.runtime.model_contract import (
    MANIFEST_FILE,
    Manifest,
    Preprocessing,
    TensorSpec,
    write_model_dir,
)


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


def outcomes_of_many_clients(backend, batch, clients: int = 24, calls: int = 10) -> collections.Counter:
    """`clients` threads each calling `backend.infer(batch)` `calls` times: how many calls got an
    answer ("ok") and how many failed, by failure kind."""
    from robot_compress.runtime.backend import BackendError

    kinds: collections.Counter = collections.Counter()
    lock = threading.Lock()

    def client() -> None:
        for _ in range(calls):
            try:
                backend.infer(batch, timeout_s=30)
                kind = "ok"
            except BackendError as exc:
                kind = exc.kind
            with lock:
                kinds[kind] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return kinds
