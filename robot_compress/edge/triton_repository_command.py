"""`robot-compress triton-repository`: the Python-backend twin of a model repository, for a
Triton without the ONNX Runtime backend (e.g. the `tritonserver` inside the nvidia-pytriton wheel)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models_dir", type=Path, metavar="MODELS_DIR",
                        help="model repository: <name>/{config.pbtxt,manifest.json,<version>/model.onnx}")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR",
                        help="where to write the twins (<name>/ per model; existing files are replaced)")
    parser.add_argument("--threads", type=int, default=1,
                        help="ONNX Runtime intra-op threads per model instance (default: 1)")
    parser.add_argument("--no-dynamic-batching", dest="dynamic_batching", action="store_false",
                        help="drop the dynamic_batching block: every request runs alone, without a queue bound "
                             "(Triton 2.51's batcher holds some lone requests ~0.5 s; docs/EDGE.md)")


def run(args: argparse.Namespace) -> int:
    from robot_compress.edge.triton_repository import write_triton_repository
    from robot_compress.runtime.errors import RobotCompressError

    try:
        written = write_triton_repository(args.models_dir, args.out_dir, threads=args.threads,
                                          dynamic_batching=args.dynamic_batching)
    except (OSError, ValueError, RobotCompressError) as exc:
        print(f"triton-repository: error: {exc}", file=sys.stderr)
        return 2
    for twin in written:
        print(f"{twin.name}: {twin.root}")
    print(f"serve with: tritonserver --model-repository {args.out_dir} (Triton's Python backend, with numpy "
          f"and onnxruntime importable by its Python)")
    return 0
