"""Load every model directory of a Triton-layout repository for the edge server.

Each model is read with `ModelDir.load` (manifest, config.pbtxt, sha256) and run by the same
`LocalBackend` the robot uses, behind a `DynamicBatcher` configured from its config.pbtxt.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from robot_compress.edge.batcher import (
    MAX_BATCH_SIZE,
    MAX_INSTANCES,
    MAX_QUEUE_DELAY_S,
    MAX_QUEUE_SIZE,
    BatchingConfig,
    DynamicBatcher,
)
from robot_compress.runtime.errors import ModelError
from robot_compress.runtime.local_backend import LocalBackend
from robot_compress.runtime.model_contract import ModelDir, list_models

log = logging.getLogger("robot_compress.edge")


@dataclass
class RequestStats:
    """Per-model request outcomes, for the protocol's ModelStatistics (Triton's success/fail)."""

    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
    last_inference_ms: int = 0  # wall clock, ms since the epoch
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, ok: bool, duration_ns: int) -> None:
        with self._lock:
            if ok:
                self.success_count += 1
                self.success_ns += duration_ns
                self.last_inference_ms = int(time.time() * 1000)
            else:
                self.fail_count += 1
                self.fail_ns += duration_ns


@dataclass
class ServedModel:
    """One loaded model: its contract, its ONNX Runtime backend, its request queue and statistics."""

    model: ModelDir
    backend: LocalBackend
    batcher: DynamicBatcher
    stats: RequestStats = field(default_factory=RequestStats)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> str:
        return str(self.model.version)

    @property
    def ready(self) -> bool:
        return self.batcher.healthy


def batching_config(model: ModelDir, default_queue_size: int, adaptive_delay: bool = True) -> BatchingConfig:
    """Triton's semantics: no `dynamic_batching` block -> one request per execution;
    max_queue_size 0 (Triton: unbounded) -> `default_queue_size`, because the queue must be bounded.
    Values outside the ranges this server runs safely are refused here, naming the field."""
    config = model.config
    dynamic = config.HasField("dynamic_batching")
    queue_size = config.dynamic_batching.default_queue_policy.max_queue_size if dynamic else 0
    delay_us = config.dynamic_batching.max_queue_delay_microseconds if dynamic else 0
    counts = [group.count or 1 for group in config.instance_group]
    checks = (
        ("max_batch_size", config.max_batch_size, 1, MAX_BATCH_SIZE,
         " (models must have a batch dimension)"),
        ("dynamic_batching.max_queue_delay_microseconds", delay_us, 0, round(MAX_QUEUE_DELAY_S * 1e6), ""),
        ("dynamic_batching.default_queue_policy.max_queue_size", queue_size, 0, MAX_QUEUE_SIZE,
         " (0: --default-queue-size)"),
        *((f"instance_group[{i}].count", count, 1, MAX_INSTANCES, "") for i, count in enumerate(counts)),
        ("instance_group (sum of count)", sum(counts), 0, MAX_INSTANCES, ""),
    )
    for field_name, value, low, high, note in checks:
        if not low <= value <= high:
            raise ModelError(f"{model.root}/config.pbtxt: {field_name} {value} is outside {low}..{high}"
                             f"{note}, the range this server accepts")
    return BatchingConfig(
        max_batch_size=int(config.max_batch_size),
        max_queue_size=int(queue_size) or default_queue_size,
        max_queue_delay_s=delay_us / 1e6,
        dynamic=dynamic,
        instances=sum(counts) or 1,
        adaptive_delay=adaptive_delay,
    )


def load_repository(repository: str | Path, threads: int = 1, default_queue_size: int = 64,
                    adaptive_delay: bool = True) -> dict[str, ServedModel]:
    """All models under `repository`, by name. Any model that fails to load stops the start, as
    Triton does by default: serving a partial repository would hide the error from the robot."""
    paths = list_models(repository)
    if not paths:
        raise ModelError(f"model repository {repository} holds no model directories "
                         f"(<name>/manifest.json + config.pbtxt + <version>/model.onnx)")
    served: dict[str, ServedModel] = {}
    try:
        for path in paths:
            model = ModelDir.load(path)
            if model.name in served:
                raise ModelError(f"{path}: model name '{model.name}' is already served from "
                                 f"{served[model.name].model.root}")
            config = batching_config(model, default_queue_size, adaptive_delay)
            backend = LocalBackend(model, threads=threads)
            backend.warm_up()
            served[model.name] = ServedModel(model, backend, DynamicBatcher(model.name, backend.infer, config))
            log.info("event=model_loaded model=%s version=%s path=%s max_batch_size=%d dynamic=%s "
                     "max_queue_delay_us=%d adaptive_delay=%s max_queue_size=%d instances=%d", model.name, model.version,
                     path, config.max_batch_size, config.dynamic, round(config.max_queue_delay_s * 1e6),
                     config.adaptive_delay, config.max_queue_size, config.instances)
    except Exception:
        stop_all(served)
        raise
    return served


def stop_all(served: dict[str, ServedModel], timeout_s: float | None = None) -> None:
    """Finish queued requests and stop every model's executor threads."""
    for entry in served.values():
        entry.batcher.stop(timeout_s)
        log.info("event=model_stopped model=%s executions=%d rows=%d rejected=%d", entry.name,
                 entry.batcher.executions, entry.batcher.executed_rows, entry.batcher.rejected)
