"""inference.GRPCInferenceService (OIP v2) and grpc.health.v1.Health over the loaded models.

Async handlers on the server's event loop: a request is checked and decoded here, then waits
for the model's batcher (executor threads) without holding a thread itself. Every request is
answered; errors carry a status and a message naming the problem, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from robot_compress import __version__
from robot_compress.edge.batcher import BatcherStopped, QueueFull
from robot_compress.edge.logfmt import Throttle, clean, shorten
from robot_compress.edge.repository import ServedModel
from robot_compress.runtime.edge_protocol import V2_TO_NUMPY, TensorDecodeError, from_contents, from_raw

log = logging.getLogger("robot_compress.edge")

SERVER_NAME = "robot_compress"
PLATFORM = "onnxruntime_onnx"
INFERENCE_SERVICE = "inference.GRPCInferenceService"
NAME_IN_ERRORS = 64  # characters of a client's model name echoed back in an error


class Rejected(Exception):
    """A request the server answers with an error status (and keeps serving)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over the loaded models."""

    def __init__(self, models: dict[str, ServedModel], max_message_bytes: int, max_concurrent_rpcs: int,
                 throttle: Throttle):
        self.models = models
        self.max_message_bytes = max_message_bytes
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self.throttle = throttle
        self.draining = False
        self.in_flight = 0  # ModelInfer calls whose request arrived and that are not answered yet
        self.rejections: collections.Counter[str] = collections.Counter()  # by status code name

    @property
    def ready(self) -> bool:
        return not self.draining and all(entry.ready for entry in self.models.values())

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self.ready)

    async def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(name=SERVER_NAME, version=__version__,
                                                  extensions=["model_configuration", "statistics"])

    async def ModelReady(self, request, context):
        entry = self._find(request.name, request.version)
        return service_pb2.ModelReadyResponse(ready=entry is not None and entry.ready and not self.draining)

    async def ModelMetadata(self, request, context):
        entry = await self._lookup(request.name, request.version, context)
        manifest = entry.model.manifest
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=entry.name, versions=[entry.version], platform=PLATFORM,
            inputs=[tensor(name=manifest.input.name, datatype=manifest.input.v2_datatype,
                           shape=[-1, *manifest.input.shape])],
            outputs=[tensor(name=manifest.output.name, datatype=manifest.output.v2_datatype,
                            shape=[-1, *manifest.output.shape])],
        )

    async def ModelConfig(self, request, context):
        entry = await self._lookup(request.name, request.version, context)
        return service_pb2.ModelConfigResponse(config=entry.model.config)

    async def ModelStatistics(self, request, context):
        """Triton's statistics extension, the parts that apply: counts and times per model.
        `fail` includes requests refused for overload (queue full, too many concurrent calls)."""
        if request.name:
            entries = [await self._lookup(request.name, request.version, context)]
        else:
            entries = [self.models[name] for name in sorted(self.models)]
        duration = service_pb2.StatisticDuration
        stats = []
        for entry in entries:
            batcher, counts = entry.batcher, entry.stats
            stats.append(service_pb2.ModelStatistics(
                name=entry.name, version=entry.version, last_inference=counts.last_inference_ms,
                inference_count=batcher.executed_rows, execution_count=batcher.executions,
                inference_stats=service_pb2.InferStatistics(
                    success=duration(count=counts.success_count, ns=counts.success_ns),
                    fail=duration(count=counts.fail_count, ns=counts.fail_ns),
                    compute_infer=duration(count=batcher.executions, ns=batcher.compute_ns))))
        return service_pb2.ModelStatisticsResponse(model_stats=stats)

    async def ModelInfer(self, request, context):
        started = time.perf_counter_ns()
        entry = self.models.get(request.model_name)
        self.in_flight += 1
        try:
            response = await self._infer(request, context)
        except Rejected as rejected:
            if entry is not None:
                entry.stats.record(False, time.perf_counter_ns() - started)
            self._log_rejection(request.model_name, rejected)
            await context.abort(rejected.code, rejected.message)
        finally:
            self.in_flight -= 1
        elapsed = time.perf_counter_ns() - started
        entry.stats.record(True, elapsed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event=infer model=%s rows=%d ms=%.3f", clean(entry.name), response.outputs[0].shape[0],
                      elapsed / 1e6)
        return response

    async def _infer(self, request, context):
        entry = self._find_or_reject(request.model_name, request.model_version)
        if self.draining:
            raise Rejected(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
        if not entry.ready:
            raise Rejected(grpc.StatusCode.UNAVAILABLE, f"model {entry.name} is not ready: {entry.batcher.failure!r}")
        if self.in_flight > self.max_concurrent_rpcs:
            raise Rejected(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"server is answering {self.max_concurrent_rpcs} calls already "
                           f"(--max-concurrent-rpcs); retry later")
        size = request.ByteSize()
        if size > self.max_message_bytes:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT,
                           f"request is {size} bytes, over the server's limit of {self.max_message_bytes} "
                           f"bytes (--max-message-mb)")
        batch = decode_input(request, entry)
        try:
            future = entry.batcher.submit(batch)
        except QueueFull as exc:
            raise Rejected(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
        except BatcherStopped as exc:
            raise Rejected(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        waiting = asyncio.wrap_future(future)  # cancelling it (deadline, client gone) cancels a queued request
        try:
            output = await asyncio.wait_for(waiting, _wait_limit(context.time_remaining()))
        except asyncio.TimeoutError:
            raise Rejected(grpc.StatusCode.DEADLINE_EXCEEDED,
                           f"model {entry.name}: no result before the request's deadline") from None
        except BatcherStopped as exc:
            raise Rejected(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        except Exception as exc:  # the model itself failed on this batch
            raise Rejected(grpc.StatusCode.INTERNAL, f"model {entry.name} failed: {exc}") from None
        return encode_output(request, entry, output)

    def _find(self, name: str, version: str) -> ServedModel | None:
        entry = self.models.get(name)
        if entry is None or version not in ("", entry.version):
            return None
        return entry

    def _find_or_reject(self, name: str, version: str) -> ServedModel:
        entry = self._find(name, version)
        if entry is not None:
            return entry
        if name in self.models:
            message = f"model '{name}' has no version '{shorten(version, NAME_IN_ERRORS)}' (served: " \
                      f"{self.models[name].version})"
        else:
            message = f"unknown model '{shorten(name, NAME_IN_ERRORS)}' (served: {', '.join(sorted(self.models))})"
        raise Rejected(grpc.StatusCode.NOT_FOUND, message)

    async def _lookup(self, name: str, version: str, context) -> ServedModel:
        try:
            return self._find_or_reject(name, version)
        except Rejected as rejected:
            self._log_rejection(name, rejected)
            await context.abort(rejected.code, rejected.message)

    def _log_rejection(self, model: str, rejected: Rejected) -> None:
        """Throttled per status code; each line says how many were counted and dropped."""
        code = rejected.code.name
        self.rejections[code] += 1
        event = "overloaded" if rejected.code == grpc.StatusCode.RESOURCE_EXHAUSTED else "rejected"
        dropped = self.throttle.admit(f"{event}:{code}")
        if dropped is None:
            return
        log.warning("event=%s model=%s code=%s detail=%s total=%d dropped_since_last=%d in_flight=%d", event,
                    clean(model), code, clean(rejected.message, 300), self.rejections[code], dropped,
                    self.in_flight)


def _wait_limit(time_remaining: float | None) -> float | None:
    """gRPC reports a huge number (or None) when the client set no deadline: wait without limit."""
    return None if time_remaining is None or time_remaining > 1e6 else max(time_remaining, 0.0)


def decode_input(request, entry: ServedModel) -> np.ndarray:
    """The request's one input as an array, after checking it against the model's contract."""
    spec = entry.model.manifest.input
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    names = [t.name for t in request.inputs]
    if names != [spec.name]:
        raise Rejected(invalid, f"model {entry.name} takes exactly one input '{spec.name}', got "
                                f"{shorten(names, NAME_IN_ERRORS)}")
    tensor = request.inputs[0]
    if tensor.datatype != spec.v2_datatype:
        raise Rejected(invalid, f"input '{spec.name}' must be {spec.v2_datatype}, got "
                                f"{shorten(tensor.datatype, NAME_IN_ERRORS) or '(empty)'}")
    shape = tuple(tensor.shape)
    max_batch = entry.batcher.config.max_batch_size
    if len(shape) != len(spec.shape) + 1 or shape[1:] != spec.shape:
        raise Rejected(invalid, f"input '{spec.name}' must have shape [N, {', '.join(map(str, spec.shape))}], "
                                f"got {shorten(list(shape), NAME_IN_ERRORS)}")
    if not 1 <= shape[0] <= max_batch:
        raise Rejected(invalid, f"input '{spec.name}': batch size {shape[0]} is outside 1..{max_batch} "
                                f"(max_batch_size of model {entry.name})")
    requested = [o.name for o in request.outputs]
    unknown = [n for n in requested if n != entry.model.manifest.output.name]
    if unknown:
        raise Rejected(invalid, f"model {entry.name} has no output {shorten(unknown, NAME_IN_ERRORS)}; its output "
                                f"is '{entry.model.manifest.output.name}'")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise Rejected(invalid, f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    if raw and tensor.HasField("contents"):
        raise Rejected(invalid, f"input '{spec.name}' has both contents and raw_input_contents; send one of them")
    try:
        if raw:
            return from_raw(raw[0], tensor.datatype, shape, spec.name)
        return from_contents(tensor.contents, tensor.datatype, shape, spec.name)
    except TensorDecodeError as exc:
        raise Rejected(invalid, str(exc)) from None


def encode_output(request, entry: ServedModel, output: np.ndarray):
    spec = entry.model.manifest.output
    data = np.ascontiguousarray(output, dtype=V2_TO_NUMPY[spec.v2_datatype])
    tensor = service_pb2.ModelInferResponse.InferOutputTensor(name=spec.name, datatype=spec.v2_datatype,
                                                              shape=list(data.shape))
    return service_pb2.ModelInferResponse(model_name=entry.name, model_version=entry.version,
                                          id=request.id, outputs=[tensor], raw_output_contents=[data.tobytes()])


class HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1.Health, computed from the server's state: service "" and
    "inference.GRPCInferenceService" are SERVING while the server is ready; a model's name is
    SERVING while that model is ready. Watch sends each change (checked every `watch_period_s`)."""

    def __init__(self, servicer: InferenceServicer, watch_period_s: float = 1.0):
        self.servicer = servicer
        self.watch_period_s = watch_period_s

    def status(self, service: str):
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        if service in ("", INFERENCE_SERVICE):
            return serving if self.servicer.ready else not_serving
        entry = self.servicer.models.get(service)
        if entry is None:
            return None
        return serving if entry.ready and not self.servicer.draining else not_serving

    async def Check(self, request, context):
        status = self.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{shorten(request.service, 64)}'")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request, context):
        last = None
        while True:
            status = self.status(request.service)
            if status is None:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            await asyncio.sleep(self.watch_period_s)
