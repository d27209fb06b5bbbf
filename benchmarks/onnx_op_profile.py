"""Where an ONNX model's batch-1 CPU time goes, per operator type (ONNX Runtime's own profiler).

    python benchmarks/onnx_op_profile.py runs/robot_small/05_export_onnx/model.onnx models/robot_small/1/model.onnx

For each file: the graph ONNX Runtime actually runs (after its fusions: QDQ pairs become
QLinearConv etc.), microseconds per image spent in each operator type, and the node count.
Writes runs/onnx_op_profile.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]


def profile(path: Path, threads: int, runs: int) -> dict[str, dict[str, float]]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(REPO / "runs" / "ort_profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shape = (1, *session.get_inputs()[0].shape[1:])
    if session.get_inputs()[0].type == "tensor(uint8)":  # a detector's wire input: image bytes
        x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    else:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(runs):
        session.run(None, {name: x})
    trace = Path(session.end_profiling())
    micros: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            micros[event["args"]["op_name"]] += event["dur"]
            calls[event["args"]["op_name"]] += 1
    trace.unlink()
    return {op: {"us_per_image": micros[op] / runs, "nodes": calls[op] // runs} for op, _ in micros.most_common()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="ONNX files")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    missing = [str(m) for m in args.models if not m.is_file()]
    if missing:
        print(f"no such ONNX file: {', '.join(missing)}", file=sys.stderr)
        return 2
    (REPO / "runs").mkdir(exist_ok=True)
    results = {}
    for model in args.models:
        ops = results[str(model)] = profile(model, args.threads, args.runs)
        total = sum(v["us_per_image"] for v in ops.values())
        print(f"\n{model}: {total:.0f} µs per image in operators ({args.threads} thread, {args.runs} runs)")
        print("| operator | nodes | µs per image |\n|---|---|---|")
        for op, v in ops.items():
            print(f"| {op} | {v['nodes']} | {v['us_per_image']:.1f} |")
    out = REPO / "runs" / "onnx_op_profile.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
