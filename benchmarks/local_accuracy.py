"""Top-1 of a model directory with the local ONNX Runtime backend vs its published accuracy.

    .venv/bin/python benchmarks/local_accuracy.py models/cifar10_resnet20 models/cifar10_resnet56

Prints a table and writes JSON (default runs/local_accuracy.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from robot_compress.runtime.datasets import load_cifar10_npz
from robot_compress.runtime.evaluate import top1_accuracy
from robot_compress.runtime.local_backend import LocalBackend

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/cifar10/test_dev.npz")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "runs/local_accuracy.json")
    args = parser.parse_args()

    data = load_cifar10_npz(args.data)
    rows = []
    for path in args.models:
        backend = LocalBackend(path, threads=args.threads)
        start = time.perf_counter()
        accuracy = top1_accuracy(backend, data, backend.manifest.preprocessing)
        published = backend.manifest.source.get("published_top1")
        rows.append({"model": path.name, "images": len(data), "top1": accuracy, "published_top1": published,
                     "difference_points": None if published is None else 100 * (accuracy - published),
                     "seconds": time.perf_counter() - start})
    table = Table(title=f"local ONNX Runtime top-1 on {args.data.name}")
    for column in ("model", "images", "top-1", "published", "diff (points)", "seconds"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["model"], str(r["images"]), f"{r['top1']:.2%}",
                      "-" if r["published_top1"] is None else f"{r['published_top1']:.2%}",
                      "-" if r["difference_points"] is None else f"{r['difference_points']:+.2f}",
                      f"{r['seconds']:.1f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
