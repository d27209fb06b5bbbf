"""`robot-compress align-channels models/<name>`: widen a finished model directory's channel counts.

The recipe stage `align_channels` does this inside a compression run; this command does it to a
model directory that already exists (a shipped model whose run directory is gone), in place. The
answers stay the same (checked), so the manifest's accuracy stays; its sha256, bytes and latencies
are updated and the step is recorded under created.post_processing with this command."""

from __future__ import annotations

import argparse
import gzip
import shlex
import sys
import tempfile
import time
from pathlib import Path

AUTO_MIN_GAIN = 0.05  # --auto widens only for a gain this large, seen in two separate measurements


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="model directory (models/<name>), rewritten in place")
    parser.add_argument("--multiple", type=int, default=8, help="round channel counts up to a multiple of this "
                        "(default 8: ONNX Runtime's AVX2 block; try 16 and keep the faster)")
    parser.add_argument("--max-width", type=int, help="widen only layers of at most this many channels: "
                        "narrow layers gain the most speed, wide ones cost the most bytes (default: all)")
    parser.add_argument("--auto", action="store_true", help="time every --multiple (8, 16) and --max-width "
                        "on this machine and keep the fastest (a file within 3%% of it but smaller wins), if it "
                        "is 5%% faster than the file as it is in the trial and again in a second measurement; "
                        "a widening whose answers on this CPU's INT8 kernels differ from the file's is not "
                        "tried (run it on the robot: the best widths and the kernels depend on the CPU)")
    parser.add_argument("--check-images", type=int, default=64, help="random inputs both files must answer alike")
    parser.add_argument("--max-abs-diff", type=float, default=1e-3, help="largest allowed logit difference")
    parser.add_argument("--latency-runs", type=int, default=400, help="timed single-image runs per file and "
                        "thread count (before and after take turns)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from robot_compress.compress.channel_alignment import AlignmentMismatch, align_file
    from robot_compress.compress.metrics import interleaved_latency_ms
    from robot_compress.compress.recipe import AlignChannels, RecipeError
    from robot_compress.runtime.cpu_info import cpu_description
    from robot_compress.runtime.model_contract import (
        MANIFEST_FILE,
        ModelDir,
        ModelError,
        sha256_of,
        write_manifest,
    )
    from robot_compress.runtime.schema import validate

    try:  # the recipe stage's own checks, so both say the same
        validate(AlignChannels, {"multiple": args.multiple, "max_width": args.max_width,
                                 "check_images": args.check_images, "max_abs_diff": args.max_abs_diff},
                 "align-channels", RecipeError)
        model = ModelDir.load(args.model)
    except (RecipeError, ModelError) as exc:  # ManifestError is a ModelError too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manifest = model.manifest
    shape = (args.check_images, *manifest.input.shape)
    inputs = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    trials: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        aligned = Path(tmp) / "model.onnx"
        try:
            if args.auto:
                trials, rejected = _time_candidates(model.onnx_path, Path(tmp), inputs, args.max_abs_diff,
                                                    args.latency_runs)
                choice = choose_layout(trials)
                if choice is None:
                    why = ("no widening was faster on this machine" if len(trials) > 1 else
                           "no widening answers as the file does on this CPU" if rejected else
                           "no layer to widen")
                    print(f"{args.model}: {why}; nothing written")
                    return 0
                args.multiple, args.max_width = choice
            report = align_file(model.onnx_path, aligned, args.multiple, inputs, args.max_abs_diff, args.max_width)
        except AlignmentMismatch as exc:
            print(f"error: {exc}; {model.onnx_path} is unchanged", file=sys.stderr)
            return 1
        print(report.summary())
        if not report.widths:
            print(f"{args.model} has no layer to widen at multiple {args.multiple}"
                  + (f" and max width {args.max_width}" if args.max_width else "") + "; nothing written")
            return 0
        latency = {}
        for threads in (1, 2):
            before, after = interleaved_latency_ms([model.onnx_path, aligned], manifest.input.shape, threads,
                                                   warmup=20, runs=args.latency_runs)
            latency[threads] = (before, after)
            print(f"{threads} thread(s): p50 {before['p50']:.3f} -> {after['p50']:.3f} ms")
        if args.auto and latency[1][1]["p50"] > (1 - AUTO_MIN_GAIN) * latency[1][0]["p50"]:
            print(f"--auto: this second measurement does not confirm a {AUTO_MIN_GAIN:.0%} gain at 1 thread "
                  f"(timing noise picked it); nothing written")
            return 0
        raw = aligned.read_bytes()
        model.onnx_path.write_bytes(raw)
    manifest.onnx_sha256 = sha256_of(model.onnx_path)
    manifest.metrics.update({"bytes": len(raw), "bytes_gzip": len(gzip.compress(raw, compresslevel=9)),
                             **{f"latency_ms_{t}t": after for t, (_, after) in latency.items()}})
    manifest.created.setdefault("post_processing", []).append({
        "command": "robot-compress " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["align-channels"]
        else f"robot-compress align-channels {args.model} --multiple {args.multiple}",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": cpu_description(),
        "multiple": args.multiple, "max_width": args.max_width, "widths": {str(a): b for a, b in sorted(report.widths.items())},
        **report.as_record(), "bytes_before": report.bytes_before, "bytes_after": len(raw),
        "latency_ms_before": {f"{t}t": before for t, (before, _) in latency.items()},
        "latency_ms_after": {f"{t}t": after for t, (_, after) in latency.items()},
        **({"auto_trials": trials} if trials else {})})
    write_manifest(model.root, manifest)
    _note_in_report(model.root / "report.md", manifest.created["post_processing"][-1])
    ModelDir.load(model.root)  # the rewritten directory passes its own checks
    print(f"rewrote {model.onnx_path} and {model.root / MANIFEST_FILE}")
    return 0


def _note_in_report(report: Path, record: dict) -> None:
    """The pipeline's report describes the file it wrote; say what happened to that file since."""
    if not report.is_file():
        return
    widths = ", ".join(f"{a}->{b}" for a, b in record["widths"].items())
    before, after = record["latency_ms_before"]["1t"]["p50"], record["latency_ms_after"]["1t"]["p50"]
    report.write_text(report.read_text().rstrip("\n") + (
        f"\n\n## Post-processing\n\n- `{record['command']}` ({record['date']}, {record['cpu']}): channels "
        f"widened {widths} with zero filters; max |after - before| {record['max_abs_diff']:.1e} as the graphs "
        f"define them, {record['deployed_max_abs_diff']:.1e} on this CPU's fused kernels; "
        f"{record['bytes_before']:,} -> {record['bytes_after']:,} bytes; p50 at 1 thread {before:.3f} -> "
        f"{after:.3f} ms. The table above shows the file as the run wrote it.\n"))


def _time_candidates(source: Path, tmp: Path, inputs, bound: float, runs: int) -> tuple[list[dict], int]:
    """The file as it is, then each distinct widening by --multiple 8/16 at every --max-width that
    changes the result (each checked like the final file, and kept only if this CPU's fused INT8
    kernels answer for it as for the file as it is), timed together (interleaved, 1 thread)."""
    import onnx

    from robot_compress.compress.channel_alignment import align_channels, save_checked
    from robot_compress.compress.metrics import interleaved_latency_ms

    model = onnx.load(str(source))
    trials = [{"multiple": None, "max_width": None, "widths": {}, "file": source}]
    rejected = 0
    for multiple in (8, 16):
        widest = align_channels(model, multiple)  # its largest widened width: the same as no --max-width
        for max_width in sorted(widest.widths):
            result = widest if max_width == max(widest.widths) else align_channels(model, multiple, max_width)
            if all(t["widths"] != result.widths for t in trials):
                target = tmp / f"m{multiple}_w{max_width}.onnx"
                report = save_checked(result, source, target, inputs, bound)
                if not report.same_on_this_cpu():
                    print(f"  --multiple {multiple} --max-width {max_width}: not a candidate: "
                          f"{report.kernel_note()}")
                    rejected += 1
                    continue
                trials.append({"multiple": multiple, "max_width": max_width, "widths": result.widths,
                               "file": target})
    timings = interleaved_latency_ms([t["file"] for t in trials], tuple(inputs.shape[1:]), 1, warmup=20, runs=runs)
    for trial, timing in zip(trials, timings, strict=True):
        trial.update(bytes=trial.pop("file").stat().st_size, p50_ms=timing["p50"],
                     widths={str(a): b for a, b in sorted(trial["widths"].items())})
        label = "as it is" if trial["multiple"] is None else \
            f"--multiple {trial['multiple']} --max-width {trial['max_width']} -> {trial['widths']}"
        print(f"  {label}: {trial['bytes']:,} bytes, p50 {trial['p50_ms']:.3f} ms")
    return trials, rejected


def choose_layout(trials: list[dict]) -> tuple[int, int | None] | None:
    """(multiple, max_width) of the fastest trial, or of a smaller file within 3% of it; None when
    that is the file as it is, or no trial is AUTO_MIN_GAIN faster than it."""
    fastest = min(t["p50_ms"] for t in trials)
    best = min((t for t in trials if t["p50_ms"] <= 1.03 * fastest), key=lambda t: t["bytes"])
    if best["multiple"] is None or best["p50_ms"] > (1 - AUTO_MIN_GAIN) * trials[0]["p50_ms"]:
        return None
    return best["multiple"], best["max_width"]
