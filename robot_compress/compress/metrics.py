"""Measure an artefact the way the robot will run it: top-1 through the runtime's preprocessing and
ONNX Runtime, parameters (total and non-zero), file bytes (raw and gzip), MACs, and ONNX Runtime
CPU latency at batch 1 for each thread count."""

from __future__ import annotations

import functools
import gzip
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from robot_compress.compress.recipe import MetricsConfig
from robot_compress.runtime.datasets import LabelledImages
from robot_compress.runtime.evaluate import top1_accuracy
from robot_compress.runtime.latency_stats import percentile
from robot_compress.runtime.local_backend import make_session
from robot_compress.runtime.model_contract import Preprocessing

if TYPE_CHECKING:
    from torch import nn

T = TypeVar("T")


class OnnxFileBackend:
    """LocalBackend's inference on a bare ONNX file (stage artefacts have no model directory yet)."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int = 2):
        self.session = make_session(path, threads=threads)
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray, timeout_s: float | None = None) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) parameters, frozen ones included."""
    import torch

    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return total, nonzero


def count_macs(model: nn.Module, input_size: tuple[int, int]) -> int | None:
    """Multiply-accumulates of one image (torch-pruning's counter); None for TorchScript models."""
    import torch
    import torch_pruning as tp

    try:
        macs, _ = tp.utils.count_ops_and_params(model.cpu().eval(), torch.zeros(1, 3, *input_size))
    except Exception:  # TorchScript and exotic modules cannot be hooked
        return None
    return int(macs)


def latency_ms(path: Path, input_shape: tuple[int, ...], threads: int, warmup: int, runs: int) -> dict[str, float]:
    """p50/p95 wall time of single-image inference with a fixed ONNX Runtime thread count."""
    return interleaved_latency_ms([path], input_shape, threads, warmup, runs, rounds=1)[0]


def _random_input(session, input_shape: tuple[int, ...]) -> np.ndarray:
    """One image of the file's input type: uint8 pixels for a detection graph, else float32 noise."""
    rng = np.random.default_rng(0)
    if session.get_inputs()[0].type == "tensor(uint8)":
        return rng.integers(0, 256, (1, *input_shape), dtype=np.uint8)
    return rng.standard_normal((1, *input_shape)).astype(np.float32)


def interleaved_latency_ms(paths: list[Path], input_shape: tuple[int, ...], threads: int, warmup: int, runs: int,
                           rounds: int = 10) -> list[dict[str, float]]:
    """p50/p95 per file, the files taking turns for `rounds` rounds of runs/rounds calls each
    (see `interleaved_samples_ms`)."""
    sessions = [make_session(path, threads=threads) for path in paths]
    feed = [{session.get_inputs()[0].name: _random_input(session, input_shape)} for session in sessions]
    samples = interleaved_samples_ms([functools.partial(session.run, None) for session in sessions], feed=feed,
                                     rounds=rounds, runs=max(1, runs // rounds), warmup=warmup)
    return [{"p50": percentile(times, 50), "p95": percentile(times, 95)} for times in samples]


def interleaved_samples_ms(calls: Sequence[Callable[[T], object]], *, feed: Sequence[T], rounds: int, runs: int,
                           warmup: int = 0) -> list[list[float]]:
    """Wall times in ms of `calls[i](feed[i])`, one list per call: after `warmup` untimed calls of
    each, `rounds` rounds in which each call runs `runs` times in turn, so that all of them see the
    same machine load (a busy machine slows each one alike, and the ratios between them hold)."""
    for call, item in zip(calls, feed, strict=True):
        for _ in range(warmup):
            call(item)
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for call, item, times in zip(calls, feed, samples, strict=True):
            for _ in range(runs):
                start = time.perf_counter()
                call(item)
                times.append((time.perf_counter() - start) * 1e3)
    return samples


def measure(model: nn.Module, onnx_path: Path, eval_data: LabelledImages, spec: Preprocessing,
            config: MetricsConfig) -> dict[str, Any]:
    total, nonzero = count_params(model)
    raw = onnx_path.read_bytes()
    metrics: dict[str, Any] = {
        "top1": top1_accuracy(OnnxFileBackend(onnx_path), eval_data, spec),
        "eval_images": len(eval_data),
        "params": total,
        "params_nonzero": nonzero,
        "macs": count_macs(model, spec.input_size),
        "bytes": len(raw),
        "bytes_gzip": len(gzip.compress(raw, compresslevel=9)),
    }
    for threads in config.latency_threads:
        result = latency_ms(onnx_path, (3, *spec.input_size), threads, config.latency_warmup, config.latency_runs)
        metrics[f"latency_ms_{threads}t"] = result
    return metrics
