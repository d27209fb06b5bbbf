"""CIFAR-10 compression results: run the recipes (optional) and build the results table.

    python benchmarks/compress_cifar10.py --run        # train everything (hours on 2 CPU cores)
    python benchmarks/compress_cifar10.py              # only collect finished runs and re-time them
    python benchmarks/compress_cifar10.py --shipped    # the committed models/ alone (no runs/ needed)

Accuracy, parameters, bytes and MACs come from each run's own metrics (runs/<name>/NN_<stage>/
metrics.json, measured by the pipeline with ONNX Runtime on test_dev). Latency is measured again
here for every model in one process, round-robin, so all models see the same machine load.
Writes runs/compress_cifar10.json, docs/results_pareto.png and prints the markdown table.

--shipped times the edge model and every models/robot_* directory as committed, measures their
top-1 on test_dev on this machine (INT8 kernels round differently from CPU to CPU), repeats the
interleaved timing --repeats times and gives the spread of the speed-ups: on a shared VM one
repetition can be 15% off the next. Writes runs/shipped_models.json and docs/shipped_pareto.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (label, recipe, model directory it writes); the work directory is runs/<model directory name>.
RUNS = [
    ("robot_balanced: ResNet-32 student, pruned to 50% + KD", "recipes/resnet56_to_resnet32_prune50_distill.yaml",
     "models/robot_balanced"),
    ("ResNet-56 pruned 50% + KD", "recipes/resnet56_prune50_distill.yaml", "runs/models/resnet56_prune50_distill"),
    ("ResNet-56 pruned 50%, round_to 8, + KD (1 epoch)", "recipes/resnet56_prune50_round8_distill.yaml",
     "runs/models/resnet56_prune50_round8_distill"),
    ("robot_small: ResNet-20 student, pruned to 8% + KD", "recipes/resnet56_to_resnet20_prune92_distill.yaml",
     "models/robot_small"),
    ("robot_small_accurate: ResNet-56 cut to 9 blocks, pruned to 10% + KD", "recipes/resnet56_depth_prune90_distill.yaml",
     "models/robot_small_accurate"),
    ("ResNet-56 pruned 90% (width only) + KD", "recipes/resnet56_prune90_distill.yaml",
     "runs/models/resnet56_prune90_distill"),
    ("ablation: prune 90% + plain fine-tune", "recipes/resnet56_prune90_finetune.yaml",
     "runs/models/resnet56_prune90_finetune"),
    ("low-rank (SVD, 95% energy)", "recipes/resnet56_lowrank.yaml", "runs/models/resnet56_lowrank"),
    ("weight sharing (4-bit k-means)", "recipes/resnet56_weightshare.yaml", "runs/models/resnet56_weightshare"),
]
EDGE = REPO / "models" / "cifar10_resnet56"


def run_recipes(threads: int) -> None:
    for _, recipe, out in RUNS:
        command = ["nice", "-n", "19", sys.executable, "-m", "robot_compress.cli", "compress", recipe, "--out", out,
                   "--threads", str(threads), "--resume"]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, cwd=REPO, check=True)


def stage_metrics(work_dir: Path) -> list[tuple[str, dict]]:
    rows = []
    for directory in sorted(work_dir.glob("[0-9][0-9]_*")):
        if (directory / "metrics.json").is_file():
            rows.append((directory.name, json.loads((directory / "metrics.json").read_text())))
    return rows


def collect() -> list[dict]:
    """One entry per measured artefact: the edge model, then per run its FP32 and INT8 ONNX."""
    entries = []
    for label, recipe, out in RUNS:
        work_dir = REPO / "runs" / Path(out).name
        stages = stage_metrics(work_dir)
        if not stages or not (REPO / out / "manifest.json").is_file():
            print(f"skipping {label}: no finished run in {work_dir}", file=sys.stderr)
            continue
        if not entries:
            teacher = json.loads((work_dir / "00_teacher" / "metrics.json").read_text())
            entries.append({"label": "edge: ResNet-56 (teacher), FP32", "onnx": str(EDGE / "1" / "model.onnx"),
                            "metrics": teacher, "recipe": None, "seconds": 0})
        run = json.loads((work_dir / "run.json").read_text())
        seconds = sum(metrics.get("seconds", 0) for _, metrics in stages)
        for stage, metrics in stages:
            if stage.endswith(("export_onnx", "quantize_int8", "align_channels")):
                kind = {"export_onnx": "FP32", "quantize_int8": "INT8"}.get(stage[3:], "INT8, channels aligned")
                entries.append({"label": f"{label}, {kind}", "onnx": str(work_dir / stage / "model.onnx"),
                                "metrics": metrics, "recipe": recipe, "seconds": seconds,
                                "command": run["command"], "device": run["device"]})
    return entries


def retime(entries: list[dict], threads: tuple[int, ...], rounds: int, runs: int) -> None:
    """p50/p95 batch-1 latency per model and thread count, interleaving models round by round."""
    from robot_compress.compress.metrics import interleaved_latency_ms

    for t in threads:
        results = interleaved_latency_ms([e["onnx"] for e in entries], (3, 32, 32), t, 20, rounds * runs, rounds)
        for entry, result in zip(entries, results, strict=True):
            entry[f"latency_ms_{t}t"] = result


def channel_alignment(runs: int) -> None:
    """Batch-1 latency of ResNet-56 pruned in several ways (no training: latency only), next to the
    unpruned edge model and the 20-layer ResNet-20: what channel counts and depth cost on this CPU."""
    import copy

    import torch

    from robot_compress.compress.cifar_resnet import cifar_resnet, load_checkpoint
    from robot_compress.compress.metrics import count_params, latency_ms
    from robot_compress.compress.onnx_export import export_onnx
    from robot_compress.compress.recipe import PruneStructured
    from robot_compress.compress.stages.prune_structured import (
        _pruner,
        channel_ratio_for,
        replace_zero_pad_shortcuts,
    )

    model = cifar_resnet("resnet56")
    load_checkpoint(model, REPO.parent / "shared/data/weights/cifar10_resnet56-4bfd9763.th")
    replace_zero_pad_shortcuts(model.eval())
    example = torch.zeros(1, 3, 32, 32)
    edge = latency_ms(EDGE / "1" / "model.onnx", (3, 32, 32), 1, 20, runs)["p50"]
    print(f"edge model (ResNet-56, 56 layers) p50 {edge:.2f} ms, 1 thread\n")
    print("| ResNet-56 pruned (56 layers) | stage widths | params | p50 ms 1 thread | speed-up vs edge |\n"
          "|---|---|---|---|---|")
    # (label, prune settings, fixed channel ratio or None to search for params.ratio)
    variants = [("50% params, round_to None", PruneStructured(ratio=0.5), None),
                ("50% params, round_to 8", PruneStructured(ratio=0.5, round_to=8), None),
                ("90% params, round_to None", PruneStructured(ratio=0.9), None),
                ("channel ratio 0.7, round_to 4 (narrowest)", PruneStructured(ratio=0.9, round_to=4), 0.7)]
    for label, params, fixed in variants:
        pruned = copy.deepcopy(model)
        ratio = fixed if fixed is not None else channel_ratio_for(pruned, params, example)
        _pruner(pruned, params, example, ratio, 1).step()
        path = export_onnx(pruned, REPO / "runs" / "alignment.onnx", (3, 32, 32))
        widths = sorted({m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)})
        ours = latency_ms(path, (3, 32, 32), 1, 20, runs)["p50"]
        print(f"| {label} | {widths} | {count_params(pruned)[0]:,} | {ours:.2f} | {edge / ours:.1f}x |")
    resnet20 = latency_ms(REPO / "models" / "cifar10_resnet20" / "1" / "model.onnx", (3, 32, 32), 1, 20, runs)["p50"]
    print(f"| (not pruned) ResNet-20, 20 layers | [16, 32, 64] | {count_params(cifar_resnet('resnet20'))[0]:,} | "
          f"{resnet20:.2f} | {edge / resnet20:.1f}x |")


def collect_shipped() -> list[dict]:
    """The edge model, then every shipped robot model, with bytes from the files themselves."""
    paths = [EDGE] + sorted(p for p in (REPO / "models").glob("robot_*") if (p / "manifest.json").is_file())
    entries = []
    for path in paths:
        manifest = json.loads((path / "manifest.json").read_text())
        metrics = dict(manifest["metrics"])
        if path == EDGE:  # converted, not compressed: its network's counts are the teachers' row
            teacher = json.loads((paths[-1] / "manifest.json").read_text())["metrics"]["stages"]["teacher"]
            metrics.update(params=teacher["params"], macs=teacher["macs"])
        entries.append({"label": path.name, "onnx": str(path / "1" / "model.onnx"), "model_dir": path,
                        "manifest_top1": metrics["top1"], "metrics": metrics,
                        "post_processing": manifest["created"].get("post_processing", [])})
    return entries


def float_twin(int8_path: Path, out: Path) -> Path:
    """The same graph with every Q/DQ pair removed and the weights dequantized to float32: an FP32
    file of the INT8 model's shape, for timing only (its weights carry the int8 rounding). The
    shipped directories keep no FP32 file, and "INT8 faster than FP32" depends on the CPU."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(int8_path))
    graph = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    bypass: dict[str, str] = {}  # activation Q/DQ output -> the float tensor it stands for
    weights: dict[str, np.ndarray] = {}
    nodes = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in init:
            x, scale = init[node.input[0]].astype(np.float64), init[node.input[1]].astype(np.float64)
            zero = init[node.input[2]].astype(np.float64) if len(node.input) > 2 and node.input[2] else 0.0
            if scale.ndim == 1 and x.ndim > 1:  # per-channel along axis 0 (conv and gemm weights)
                scale = scale.reshape(-1, *[1] * (x.ndim - 1))
                zero = np.reshape(zero, scale.shape) if np.ndim(zero) else zero
            weights[node.output[0]] = ((x - zero) * scale).astype(np.float32)
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            bypass[node.output[0]] = bypass.get(node.input[0], node.input[0])
        else:
            node.input[:] = [bypass.get(name, name) for name in node.input]
            nodes.append(node)
    for output in graph.output:
        if output.name in bypass:
            nodes.append(helper.make_node("Identity", [bypass[output.name]], [output.name]))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in weights.items())
    del graph.value_info[:]
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def shipped(repeats: int, rounds: int, runs: int) -> int:
    import gzip
    import platform

    import numpy as np

    from robot_compress.runtime.cpu_info import cpu_description
    from robot_compress.runtime.datasets import load_cifar10_npz
    from robot_compress.runtime.evaluate import top1_accuracy
    from robot_compress.runtime.local_backend import LocalBackend

    entries = collect_shipped()
    data = load_cifar10_npz(REPO.parent / "shared/data/cifar10/test_dev.npz")
    for e in entries:
        raw = Path(e["onnx"]).read_bytes()
        e["metrics"].update(bytes=len(raw), bytes_gzip=len(gzip.compress(raw, compresslevel=9)))
        backend = LocalBackend(e["model_dir"], threads=2)
        e["metrics"]["top1"] = top1_accuracy(backend, data, backend.manifest.preprocessing)
    robots = entries[1:]
    twins = [{"label": f"{e['label']} FP32 twin (timing only)", "manifest_top1": None,
              "onnx": str(float_twin(Path(e["onnx"]), REPO / "runs" / "float_twins" / f"{e['label']}.onnx")),
              "metrics": {**e["metrics"], "top1": None}, "model_dir": None} for e in robots]
    for twin in twins:
        twin["metrics"]["bytes"] = Path(twin["onnx"]).stat().st_size
    entries += twins
    ticks_before = _cpu_ticks()
    speedups: dict[str, list[float]] = {e["label"]: [] for e in entries}
    samples: dict[str, dict[str, list[float]]] = {e["label"]: {"1t": [], "2t": []} for e in entries}
    for _ in range(repeats):
        retime(entries, (1, 2), rounds, runs)
        for e in entries:
            speedups[e["label"]].append(entries[0]["latency_ms_1t"]["p50"] / e["latency_ms_1t"]["p50"])
            for t in ("1t", "2t"):
                samples[e["label"]][t].append(e[f"latency_ms_{t}"]["p50"])
    for e in entries:
        e["speedup_1t"] = {"median": float(np.median(speedups[e["label"]])), "min": min(speedups[e["label"]]),
                           "max": max(speedups[e["label"]])}
        e["p50_ms"] = {t: float(np.median(v)) for t, v in samples[e["label"]].items()}
        e["model_dir"] = e["model_dir"] and str(e["model_dir"])
    ticks_after = _cpu_ticks()
    steal = (ticks_after[0] - ticks_before[0]) / max(ticks_after[1] - ticks_before[1], 1)
    machine = {"cpu": cpu_description(), "platform": platform.platform(), "repeats": repeats, "rounds": rounds,
               "runs_per_round": runs, "cpu_steal_share": steal}
    out = REPO / "runs" / "shipped_models.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "models": entries}, indent=2, default=str) + "\n")
    from robot_compress.compress.report import pareto_plot

    plot = pareto_plot([(e["label"], {**e["metrics"], "latency_ms_1t": {"p50": e["p50_ms"]["1t"]}})
                        for e in entries if e["metrics"]["top1"] is not None],
                       REPO / "docs" / "shipped_pareto.png", f"shipped models, test_dev, on {machine['cpu']}")
    edge = entries[0]
    print(f"{machine['cpu']}; {repeats} repetitions of {rounds} rounds x {runs} runs per model; "
          f"CPU steal during timing {machine['cpu_steal_share']:.1%}\n")
    print("| model | top-1 here | manifest | params | removed | ONNX bytes | p50 ms 1 thread | p50 ms 2 threads | "
          "speed-up 1 thread, median (min–max) |\n|---|---|---|---|---|---|---|---|---|")
    def pct(value: float | None) -> str:
        return "–" if value is None else f"{value:.2%}"

    for e in entries:
        m, s = e["metrics"], e["speedup_1t"]
        print(f"| {e['label']} | {pct(m['top1'])} | {pct(e['manifest_top1'])} | {m['params']:,} | "
              f"{1 - m['params'] / edge['metrics']['params']:.1%} | {m['bytes']:,} | {e['p50_ms']['1t']:.3f} | "
              f"{e['p50_ms']['2t']:.3f} | {s['median']:.2f}x ({s['min']:.2f}–{s['max']:.2f}) |")
    print()
    for model, twin in zip(robots, twins, strict=True):
        ratio = twin["p50_ms"]["1t"] / model["p50_ms"]["1t"]
        print(f"{model['label']}: INT8 {model['p50_ms']['1t']:.3f} ms vs FP32 twin {twin['p50_ms']['1t']:.3f} ms at "
              f"1 thread: INT8 is {'faster' if ratio > 1 else 'slower'} ({ratio:.2f}x)")
    print(f"\nwrote {out.relative_to(REPO)} and {plot.relative_to(REPO)}")
    return 0


def _cpu_ticks() -> tuple[int, int]:
    """(steal, total) CPU ticks from /proc/stat: steal is the time the host took from this VM."""
    stat = Path("/proc/stat")
    fields = [int(x) for x in stat.read_text().split("\n", 1)[0].split()[1:]] if stat.is_file() else []
    return (fields[7] if len(fields) > 7 else 0), max(sum(fields), 1)


def markdown(entries: list[dict]) -> str:
    edge = entries[0]
    head = ("| model | top-1 test_dev | Δ vs edge | params | removed | MACs | ONNX bytes | gzip bytes | "
            "p50/p95 ms 1 thread | p50/p95 ms 2 threads | speed-up 1 thread |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for e in entries:
        m = e["metrics"]
        l1, l2 = e["latency_ms_1t"], e["latency_ms_2t"]
        lines.append(
            f"| {e['label']} | {m['top1']:.2%} | {(m['top1'] - edge['metrics']['top1']) * 100:+.2f} pt | "
            f"{m['params']:,} | {1 - m['params'] / edge['metrics']['params']:.1%} | {m['macs'] / 1e6:.1f} M | "
            f"{m['bytes']:,} | {m['bytes_gzip']:,} | {l1['p50']:.2f} / {l1['p95']:.2f} | "
            f"{l2['p50']:.2f} / {l2['p95']:.2f} | {edge['latency_ms_1t']['p50'] / l1['p50']:.1f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="run (or resume) every recipe first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per model per round")
    parser.add_argument("--shipped", action="store_true", help="only the committed models/ (edge and robot_*): "
                        "top-1 here and repeated timing with the speed-ups' spread")
    parser.add_argument("--repeats", type=int, default=5, help="with --shipped: timing repetitions")
    parser.add_argument("--channel-alignment", action="store_true",
                        help="only time ResNet-56 pruned several ways (channel alignment, width, depth)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.channel_alignment:
        channel_alignment(300)
        return 0
    if args.shipped:
        return shipped(args.repeats, args.rounds, args.runs)
    if args.run:
        run_recipes(args.threads)
    entries = collect()
    if not entries:
        print("no finished runs; use --run", file=sys.stderr)
        return 1
    retime(entries, (1, 2), args.rounds, args.runs)
    from robot_compress.compress.report import pareto_plot

    plot = pareto_plot([(e["label"], {**e["metrics"], "latency_ms_1t": e["latency_ms_1t"]}) for e in entries],
                       REPO / "docs" / "results_pareto.png", "ResNet-56 on CIFAR-10 (test_dev), compressed")
    out = REPO / "runs" / "compress_cifar10.json"
    out.write_text(json.dumps(entries, indent=2, default=str) + "\n")
    print(markdown(entries))
    print(f"\nwrote {out.relative_to(REPO)} and {plot.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
