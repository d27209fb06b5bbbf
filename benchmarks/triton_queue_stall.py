"""One robot against the wheel's Triton (Python backend), with and without dynamic batching: how
often a request waits long, and where the server says the time went (queue or compute).

    .venv/bin/python benchmarks/triton_queue_stall.py [--duration 8] [--slow-ms 100] [--out FILE]

One client sends batch-1 requests back to back, as a robot does at its frame rate, to a Triton
serving the ResNet-56 twin; once with config.pbtxt's dynamic batching, once without. Prints one
row per variant and writes JSON (default runs/triton_queue_stall-<time>.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robot_compress.edge.triton_repository import write_twin  # noqa: E402
from robot_compress.faults.triton_process import TritonServerProcess  # noqa: E402
from robot_compress.runtime.edge_client import EdgeBackend  # noqa: E402
from robot_compress.runtime.model_contract import ModelDir  # noqa: E402


def run_variant(model: ModelDir, root: Path, dynamic: bool, args) -> dict:
    write_twin(model, root / "repository", dynamic_batching=dynamic)
    server = TritonServerProcess(root / "repository", root / "work").start()
    try:
        edge = EdgeBackend(server.url, model.manifest)
        x = np.zeros((1, *model.manifest.input.shape), dtype=np.float32)
        edge.infer(x, timeout_s=10)
        stats = triton.InferenceServerClient(server.url)
        before = stats.get_inference_statistics(model.name).model_stats[0].inference_stats
        latencies, start = [], time.perf_counter()
        while time.perf_counter() - start < args.duration:
            t0 = time.perf_counter()
            edge.infer(x, timeout_s=10)
            latencies.append((time.perf_counter() - t0) * 1e3)
        after = stats.get_inference_statistics(model.name).model_stats[0].inference_stats
        stats.close()
        edge.close()
    finally:
        server.stop()
    slow = [ms for ms in latencies if ms > args.slow_ms]
    requests = after.success.count - before.success.count

    def total_ms(field: str) -> float:
        return (getattr(after, field).ns - getattr(before, field).ns) / 1e6

    return {"dynamic_batching": dynamic, "requests": len(latencies), "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)), "slow": len(slow),
            "slow_ms": [round(ms, 1) for ms in slow], "server_requests": requests,
            "server_queue_ms": total_ms("queue"), "server_compute_ms": total_ms("compute_infer")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "cifar10_resnet56")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per variant")
    parser.add_argument("--slow-ms", type=float, default=100.0, help="a request slower than this counts as slow")
    parser.add_argument("--out", type=Path, help="JSON file (default: runs/triton_queue_stall-<time>.json)")
    args = parser.parse_args()
    model = ModelDir.load(args.model)
    with tempfile.TemporaryDirectory(prefix="triton_stall_") as tmp:
        rows = [run_variant(model, Path(tmp) / name, dynamic, args)
                for name, dynamic in (("dynamic", True), ("plain", False))]
    print(f"{'dynamic batching':<17} {'requests':>8} {'p50 ms':>7} {'p99 ms':>7} {'slow':>5} "
          f"{'server queue ms':>15} {'server compute ms':>17}  slow requests (ms)")
    for r in rows:
        print(f"{str(r['dynamic_batching']):<17} {r['requests']:>8} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.1f} "
              f"{r['slow']:>5} {r['server_queue_ms']:>15.0f} {r['server_compute_ms']:>17.0f}  {r['slow_ms'][:12]}")
    out = args.out or REPO / "runs" / f"triton_queue_stall-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "triton_queue_stall", "model": model.name, "settings": vars(args),
                               "machine": platform.platform(), "rows": rows}, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
