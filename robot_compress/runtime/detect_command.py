"""`robot-compress detect`: detections for image files with a detection model directory, printed and drawn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, ...)")
    parser.add_argument("--model", required=True, type=Path, help="detection model directory (models/<name>)")
    parser.add_argument("--score-threshold", type=float,
                        help="show boxes scoring above this (default: the manifest's detection.score_threshold)")
    parser.add_argument("--out-dir", type=Path, default=Path("."),
                        help="where to write <image>_detections.png (default: the current directory)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default: 1)")


def run(args: argparse.Namespace) -> int:
    import cv2

    from robot_compress.runtime.detection import detect, draw_detections
    from robot_compress.runtime.errors import RobotCompressError
    from robot_compress.runtime.local_backend import LocalBackend
    from robot_compress.runtime.preprocess import decode_image

    if args.score_threshold is not None and not 0.0 <= args.score_threshold <= 1.0:
        print(f"error: --score-threshold must be between 0 and 1, got {args.score_threshold}", file=sys.stderr)
        return 2
    try:
        backend = LocalBackend(args.model, threads=args.threads)
        if backend.manifest.task != "detection":
            raise RobotCompressError(f"{args.model} is a {backend.manifest.task} model; detect needs a detection "
                                     f"model (use classify for this one)")
    except RobotCompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in args.images:
        try:
            image = decode_image(path.read_bytes())
            (found,) = detect(backend, [image], encoding="bgr8", score_threshold=args.score_threshold)
        except (OSError, RobotCompressError) as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        out = args.out_dir / f"{path.stem}_detections.png"
        cv2.imwrite(str(out), draw_detections(image, found))
        print(f"{path}: {len(found)} detections -> {out}")
        for d in found:
            print(f"  {d.score:6.1%}  {d.label:<14} [{d.x1:.0f}, {d.y1:.0f}, {d.x2:.0f}, {d.y2:.0f}]")
    return 1 if failures else 0
