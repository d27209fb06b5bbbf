"""Where an ONNX file's bytes go: weights, their scales and zero points, biases, graph.

    .venv/bin/python benchmarks/onnx_bytes.py models/robot_small models/robot_balanced/1/model.onnx

Why an INT8 file is not 4x smaller than its FP32 file: per-channel scales, int32 biases with their
own scales and zero points, and the Q/DQ nodes are a fixed cost per channel and per layer, a large
share of a model under ~100 K weights. With --fused, also the size of the same model in ONNX
Runtime's fused operator form (QLinearConv, and com.microsoft QLinearAdd/QGemm: ONNX Runtime only),
saved from a session at ORT_ENABLE_EXTENDED. Prints a table per file and writes JSON
(default runs/onnx_bytes.json).
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import onnx

from robot_compress.runtime.errors import RobotCompressError
from robot_compress.runtime.model_contract import ModelDir

REPO = Path(__file__).resolve().parents[1]


def initializer_roles(graph: onnx.GraphProto) -> dict[str, str]:
    """Initializer name -> what it is, read off the DequantizeLinear/QuantizeLinear nodes using it."""
    types = {t.name: t.data_type for t in graph.initializer}
    roles: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in types:
            kind = {onnx.TensorProto.INT8: "weight", onnx.TensorProto.UINT8: "weight",
                    onnx.TensorProto.INT32: "bias"}.get(types[node.input[0]], "constant")
            for name, part in zip(node.input, ("int values", "scales", "zero points"), strict=False):
                roles[name] = f"{kind} {part}"
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            for name in node.input[1:]:
                roles.setdefault(name, "activation scales and zero points")
    return roles


def breakdown(path: Path) -> dict[str, int]:
    model = onnx.load(str(path))
    graph = model.graph
    roles = initializer_roles(graph)
    sizes: collections.Counter = collections.Counter()
    for tensor in graph.initializer:
        sizes[roles.get(tensor.name, "float weights and biases")] += tensor.ByteSize()
    sizes["node definitions"] = sum(node.ByteSize() for node in graph.node)
    sizes["intermediate shapes (value_info)"] = sum(info.ByteSize() for info in graph.value_info)
    sizes["file"] = path.stat().st_size
    return dict(sizes)


def fused_size(path: Path, target: Path) -> int:
    """Bytes of the file ONNX Runtime writes after its QDQ fusions (Q/DQ pairs folded into QLinear ops)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return target.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="ONNX files or model directories")
    parser.add_argument("--fused", action="store_true", help="also measure ONNX Runtime's fused operator form")
    parser.add_argument("--out", type=Path, default=REPO / "runs/onnx_bytes.json")
    args = parser.parse_args()
    try:
        args.models = [ModelDir.load(path, verify_hash=False).onnx_path if path.is_dir() else path
                       for path in args.models]
    except RobotCompressError as exc:
        parser.error(str(exc))
    missing = [str(path) for path in args.models if not path.is_file()]
    if missing:
        parser.error(f"no such ONNX file or model directory: {', '.join(missing)}")
    results = {}
    for path in args.models:
        sizes = results[str(path)] = breakdown(path)
        print(f"\n{path}: {sizes['file']:,} bytes\n| part | bytes | share |\n|---|---|---|")
        for part, size in sorted(sizes.items(), key=lambda item: -item[1]):
            if part != "file" and size:
                print(f"| {part} | {size:,} | {size / sizes['file']:.1%} |")
        if args.fused:
            sizes["fused_file"] = fused_size(path, args.out.parent / ("fused_" + "_".join(path.resolve().parts[-3:])))
            print(f"in ONNX Runtime's fused operator form: {sizes['fused_file']:,} bytes")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
