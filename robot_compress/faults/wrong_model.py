"""A model directory that the edge server loads happily but that answers the robot wrongly.

Same name, same input, but `classes` outputs instead of the robot's: the edge client must call
that a bad answer rather than pass plausible-looking numbers on. Needs the `onnx` package
(compress extra); the graph is tiny (global average pool, one matrix product).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np


def make_wrong_shape_model(source: Path, repository: Path, classes: int = 5) -> Path:
    """Copy `source` (a model directory) into `repository` with a `classes`-output ONNX model.
    A detector's copy keeps its uint8 NHWC input and becomes a `classes`-way classifier: a served
    model of another task under the detector's name."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    manifest = json.loads((source / "manifest.json").read_text())
    target = repository / source.name
    shutil.copytree(source, target, dirs_exist_ok=True)
    inp, out = manifest["input"], manifest["output"]
    if manifest.get("task") == "detection":  # uint8 N x H x W x C in: cast, mean over the pixels
        channels = inp["shape"][-1]
        nodes = [helper.make_node("Cast", [inp["name"]], ["pixels"], to=TensorProto.FLOAT),
                 helper.make_node("ReduceMean", ["pixels"], ["flat"], axes=[1, 2], keepdims=0)]
        input_type = TensorProto.UINT8
        manifest["task"] = "classification"
        manifest.pop("detection", None)
    else:
        channels = inp["shape"][0]
        nodes = [helper.make_node("GlobalAveragePool", [inp["name"]], ["pooled"]),
                 helper.make_node("Flatten", ["pooled"], ["flat"])]
        input_type = TensorProto.FLOAT
    weights = numpy_helper.from_array(np.ones((channels, classes), np.float32), "w")
    graph = helper.make_graph(
        [*nodes, helper.make_node("MatMul", ["flat", "w"], [out["name"]])],
        "wrong_shape",
        [helper.make_tensor_value_info(inp["name"], input_type, ["N", *inp["shape"]])],
        [helper.make_tensor_value_info(out["name"], TensorProto.FLOAT, ["N", classes])],
        initializer=[weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx_path = target / str(manifest["version"]) / "model.onnx"
    onnx.save(model, str(onnx_path))
    manifest["output"]["shape"] = [classes]
    manifest["labels"] = manifest["labels"][:classes]
    manifest["onnx_sha256"] = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
    config = target / "config.pbtxt"
    text = config.read_text()
    output_block = re.search(r"output \{.*?\}", text, re.S)
    new_block = re.sub(r"(\s*dims: \d+)+", f"\n  dims: {classes}", output_block.group(0), count=1)
    config.write_text(text.replace(output_block.group(0), new_block))
    return target
