"""Edge server throughput and latency vs in-process ONNX Runtime, at 1, 4 and 16 concurrent clients.

Each client is a thread with its own EdgeBackend (its own gRPC connection, like one robot each)
sending one preprocessed batch after another for `--duration` seconds. The server runs in a
subprocess on loopback, once per batching mode:

  edge_dynamic         dynamic batching as config.pbtxt says, adaptive wait (the server's default)
  edge_dynamic_strict  the same, waiting max_queue_delay exactly as Triton does (--strict-queue-delay)
  edge_no_batching     config.pbtxt without dynamic_batching: every request runs alone
  triton_python        a real Triton 2.51 (the nvidia-pytriton wheel's tritonserver) with dynamic
                       batching as config.pbtxt says, running the model through its *Python backend*
                       (robot-compress triton-repository): not Triton's ONNX Runtime backend, whose
                       numbers would differ; --no-triton leaves it out
  ort_concurrent       in-process ONNX Runtime, the same number of threads and the same batch size
  ort_batched          in-process ONNX Runtime, one thread, batch = clients x batch (an ideal batcher)

    .venv/bin/python benchmarks/edge_throughput.py [--clients 1 4 16] [--duration 5] [--no-triton] [--out FILE]

A detection model (uint8 images) is sent a letterboxed coco/train photo (`--image`), so its in-graph
NMS sees a real frame's candidates; a classifier gets random float32 tensors.

Prints a table and writes JSON (default runs/edge_throughput-<time>.json). Numbers depend on the
machine and on whatever else runs on it; the JSON records the CPU count and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DETECTION_IMAGE = REPO.parent / "shared/data/coco/train/images/000000000009.jpg"

from robot_compress.edge.process import EdgeServerProcess  # noqa: E402
from robot_compress.edge.triton_repository import write_triton_repository  # noqa: E402
from robot_compress.faults.triton_process import TritonServerProcess, TritonUnavailable  # noqa: E402
from robot_compress.runtime.backend import BackendError  # noqa: E402
from robot_compress.runtime.cpu_info import cpu_description  # noqa: E402
from robot_compress.runtime.detection import letterbox  # noqa: E402
from robot_compress.runtime.edge_client import EdgeBackend  # noqa: E402
from robot_compress.runtime.latency_stats import percentile  # noqa: E402
from robot_compress.runtime.local_backend import LocalBackend  # noqa: E402
from robot_compress.runtime.model_contract import CONFIG_FILE, MANIFEST_FILE, ModelDir  # noqa: E402

TRITON_NOTE = ("triton_python: Triton 2.51 serving the model through its Python backend (ONNX Runtime inside a "
               "generated model.py, one process hop per batch), not Triton's ONNX Runtime backend")

TARGET_THROUGHPUT_RATIO = 0.70  # edge at 16 clients vs in-process ORT
TARGET_P50_OVERHEAD_MS = 1.5  # edge at 1 client vs in-process ORT


@dataclass
class Point:
    mode: str
    clients: int
    batch: int
    requests: int
    errors: int
    seconds: float
    requests_per_s: float
    images_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch: float  # rows per model execution (edge: from the server's statistics)


def measure(mode: str, clients: int, batch: int, make_call: Callable[[], Callable[[], None]],
            duration_s: float, warmup_s: float) -> Point:
    """Run `clients` threads, each calling its own `make_call()` back to back; keep the latencies
    of calls that start after the warm-up and before the end."""
    calls = [make_call() for _ in range(clients)]
    start = time.perf_counter() + warmup_s
    end = start + duration_s
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    def client(index: int) -> None:
        call, mine = calls[index], latencies[index]
        while (t0 := time.perf_counter()) < end:
            try:
                call()
            except BackendError:
                errors[index] += 1
                continue
            if t0 >= start:
                mine.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = np.concatenate([np.asarray(x) for x in latencies]) * 1e3
    count = len(flat)
    return Point(mode, clients, batch, count, sum(errors), duration_s, count / duration_s,
                 count * batch / duration_s, _or_nan(percentile(flat, 50)),
                 _or_nan(percentile(flat, 99)), float(batch))


def _or_nan(value: float | None) -> float:
    """A plain float (a numpy scalar would make the targets' booleans numpy's, which JSON refuses)."""
    return float("nan") if value is None else float(value)


def repository_variant(model: ModelDir, root: Path, dynamic: bool) -> Path:
    """A repository holding `model` (its ONNX file linked, not copied), with or without dynamic batching."""
    from google.protobuf import text_format

    target = root / model.name
    target.mkdir(parents=True)
    (target / str(model.version)).symlink_to(model.onnx_path.parent.resolve())
    (target / MANIFEST_FILE).write_text((model.root / MANIFEST_FILE).read_text())
    config = type(model.config)()
    config.CopyFrom(model.config)
    if not dynamic:
        config.ClearField("dynamic_batching")
    (target / CONFIG_FILE).write_text(text_format.MessageToString(config))
    return root


def edge_points(mode: str, model: ModelDir, start_server: Callable[[], EdgeServerProcess | TritonServerProcess],
                args, x: np.ndarray) -> list[Point]:
    """Every client count against one server; rows per execution from its statistics (both servers
    implement the statistics extension)."""
    server = start_server()
    stats = triton.InferenceServerClient(server.url)

    def rows_and_executions() -> tuple[int, int]:
        (entry,) = stats.get_inference_statistics(model.name).model_stats
        return entry.inference_count, entry.execution_count

    def make_call():
        backend = EdgeBackend(server.url, model.manifest)
        backend.infer(x, timeout_s=10)  # connect before timing
        return lambda: backend.infer(x, timeout_s=10)

    points = []
    try:
        for clients in args.clients:
            rows, executions = rows_and_executions()
            point = measure(mode, clients, args.batch, make_call, args.duration, args.warmup)
            rows_after, executions_after = rows_and_executions()
            point.mean_batch = (rows_after - rows) / max(executions_after - executions, 1)
            points.append(point)
        return points
    finally:
        stats.close()
        server.stop()


def ort_points(model: ModelDir, args, x: np.ndarray) -> list[Point]:
    local = LocalBackend(model, threads=args.threads)
    points = [measure("ort_concurrent", c, args.batch, lambda: lambda: local.infer(x), args.duration, args.warmup)
              for c in args.clients]
    for c in args.clients:
        rows = min(c * args.batch, model.max_batch_size)
        batched = np.repeat(x[:1], rows, axis=0)
        point = measure("ort_batched", 1, rows, lambda b=batched: lambda: local.infer(b), args.duration, args.warmup)
        point.clients = c
        points.append(point)
    return points


def verdict(points: list[Point], args) -> dict[str, object]:
    """The two targets. Throughput: against ort_concurrent (same clients, same batch size per
    request), and for information against ort_batched (what ideal batching could reach). p50: against
    the lower of the two in-process p50s at the fewest clients (the same work when that is 1)."""
    by = {(p.mode, p.clients): p for p in points}
    out: dict[str, object] = {}
    most, fewest = max(args.clients), min(args.clients)
    base_p50 = min(by[("ort_concurrent", fewest)].p50_ms, by[("ort_batched", fewest)].p50_ms)
    for mode in ("edge_dynamic", "edge_dynamic_strict", "edge_no_batching"):
        ratio = by[(mode, most)].images_per_s / by[("ort_concurrent", most)].images_per_s
        out[f"{mode}_throughput_ratio_at_{most}"] = round(ratio, 3)
        out[f"{mode}_throughput_target_met"] = ratio >= TARGET_THROUGHPUT_RATIO
        out[f"{mode}_throughput_ratio_to_ort_batched_at_{most}"] = round(
            by[(mode, most)].images_per_s / by[("ort_batched", most)].images_per_s, 3)
        overhead = by[(mode, fewest)].p50_ms - base_p50
        out[f"{mode}_p50_overhead_ms_at_{fewest}"] = round(overhead, 3)
        out[f"{mode}_p50_target_met"] = overhead <= TARGET_P50_OVERHEAD_MS
    if ("triton_python", most) in by:  # for comparison only: the targets are the edge server's
        out[f"triton_python_throughput_ratio_at_{most}"] = round(
            by[("triton_python", most)].images_per_s / by[("ort_concurrent", most)].images_per_s, 3)
        out[f"triton_python_p50_overhead_ms_at_{fewest}"] = round(by[("triton_python", fewest)].p50_ms - base_p50, 3)
    return out


def print_table(points: list[Point]) -> None:
    print(f"{'mode':<20} {'clients':>7} {'batch':>5} {'req/s':>9} {'img/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'rows/exec':>9} {'errors':>6}")
    for p in points:
        print(f"{p.mode:<20} {p.clients:>7} {p.batch:>5} {p.requests_per_s:>9.1f} {p.images_per_s:>9.1f} "
              f"{p.p50_ms:>8.2f} {p.p99_ms:>8.2f} {p.mean_batch:>9.1f} {p.errors:>6}")


def input_batch(model: ModelDir, batch: int, image: Path) -> np.ndarray:
    """What each request sends: a detector's letterboxed photo, or a classifier's random tensor."""
    spec = model.manifest.input
    if model.manifest.task == "detection":
        import cv2

        photo = cv2.imread(str(image))
        if photo is None:
            raise SystemExit(f"edge_throughput: cannot read --image {image}")
        one = letterbox(photo, model.manifest.preprocessing.input_size[0])[0]
        return np.repeat(one[None], batch, axis=0).astype(spec.dtype)
    return np.random.default_rng(0).standard_normal((batch, *spec.shape)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "cifar10_resnet56")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--batch", type=int, default=1, help="images per request (default: 1, one frame)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads, server and in-process")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring, per point")
    parser.add_argument("--no-triton", dest="triton", action="store_false",
                        help="leave out the real Triton's rows (it needs the nvidia-pytriton wheel)")
    parser.add_argument("--image", type=Path, default=DETECTION_IMAGE,
                        help="detection models: the photo sent, letterboxed (default: a coco/train image)")
    parser.add_argument("--out", type=Path, help="JSON file (default: runs/edge_throughput-<time>.json)")
    args = parser.parse_args(argv)

    model = ModelDir.load(args.model)
    x = input_batch(model, args.batch, args.image)
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="edge_bench_") as tmp:
        triton_rows: list[Point] = []
        if args.triton:  # first, so a Triton that cannot start stops the run before the long part
            twin = Path(tmp) / "triton_python"
            write_triton_repository(repository_variant(model, Path(tmp) / "triton_source", True), twin,
                                    threads=args.threads)
            try:
                triton_rows = edge_points("triton_python", model, lambda: TritonServerProcess(
                    twin, Path(tmp) / "triton_work").start(), args, x)
            except TritonUnavailable as exc:
                print(f"edge_throughput: {exc}\n(--no-triton leaves Triton out)", file=sys.stderr)
                return 2
            print("measured triton_python", file=sys.stderr, flush=True)
        variants = [("edge_dynamic", True, []), ("edge_dynamic_strict", True, ["--strict-queue-delay"]),
                    ("edge_no_batching", False, [])]
        for mode, dynamic, server_args in variants:
            repository = repository_variant(model, Path(tmp) / mode, dynamic)
            points += edge_points(mode, model, lambda r=repository, a=server_args: EdgeServerProcess(
                r, r / "server.log", "--threads", str(args.threads), *a).start(), args, x)
            print(f"measured {mode}", file=sys.stderr, flush=True)
        points += triton_rows
    points += ort_points(model, args, x)
    print_table(points)
    if args.triton:
        print(TRITON_NOTE)
    result = {
        "benchmark": "edge_throughput",
        "model": model.name,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpu": cpu_description(), "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "batching": {"max_batch_size": model.max_batch_size,
                     "max_queue_delay_us": model.config.dynamic_batching.max_queue_delay_microseconds},
        "targets": verdict(points, args),
        "notes": [TRITON_NOTE] if args.triton else [],
        "points": [asdict(p) for p in points],
    }
    print(json.dumps(result["targets"], indent=2))
    out = args.out or REPO / "runs" / f"edge_throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
