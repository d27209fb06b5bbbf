"""`robot-compress classify`: top-k labels for image files, with the local ONNX Runtime backend."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, ...)")
    parser.add_argument("--model", required=True, type=Path, help="model directory (models/<name>)")
    parser.add_argument("--top", type=int, default=5, help="how many labels to print (default: 5)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default: 1)")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="refuse images whose header declares more pixels than this, before decoding "
                             "(default: 8192x4096 = 33554432)")


def run(args: argparse.Namespace) -> int:
    from robot_compress.runtime.errors import RobotCompressError
    from robot_compress.runtime.local_backend import LocalBackend
    from robot_compress.runtime.preprocess import MAX_IMAGE_PIXELS, decode_image

    max_pixels = MAX_IMAGE_PIXELS if args.max_pixels is None else args.max_pixels
    if max_pixels < 1:
        print(f"error: --max-pixels must be at least 1, got {max_pixels}", file=sys.stderr)
        return 2

    try:
        backend = LocalBackend(args.model, threads=args.threads)
    except RobotCompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failures = 0
    for path in args.images:
        try:
            image = decode_image(path.read_bytes(), max_pixels)
            (prediction,) = backend.classify(image[None], encoding="bgr8", k=args.top)
        except (OSError, RobotCompressError) as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        print(f"{path}:")
        for label, score in prediction.top_k:
            print(f"  {score:7.2%}  {label}")
    return 1 if failures else 0
