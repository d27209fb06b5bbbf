"""The edge inference service: Open Inference Protocol v2 (KServe / Triton) over gRPC.

Serves every model of a Triton-layout repository with ONNX Runtime and Triton-style dynamic
batching, using the protocol's generated stubs from tritonclient, so any OIP v2 client
(tritonclient, the robot's EdgeBackend) works against it, and the robot can equally be pointed
at a real Triton serving the same directory. Overload is answered with RESOURCE_EXHAUSTED at
once (bounded queues, bounded concurrent RPCs), never by growing memory.

    robot-compress edge-serve --model-repository models/ --port 8001

`command` builds the ServerConfig from the command line; this module never imports it.
"""

from __future__ import annotations

import hmac
import logging
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from robot_compress import __version__
from robot_compress.edge.batcher import BatcherStopped, QueueFull
from robot_compress.edge.repository import ServedModel, load_repository, stop_all
from robot_compress.runtime.edge_protocol import V2_TO_NUMPY, TensorDecodeError, from_contents, from_raw

log = logging.getLogger("robot_compress.edge")

SERVER_NAME = "robot_compress"
PLATFORM = "onnxruntime_onnx"
MiB = 1024 * 1024


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate and key, and optionally a CA that client certificates
    must chain to (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class ServerConfig:
    repository: Path
    host: str = "0.0.0.0"
    port: int = 8001  # 0: any free port (see EdgeServer.port)
    threads: int = 1  # ONNX Runtime intra-op threads per model
    max_concurrent_rpcs: int = 64  # gRPC handler threads; beyond it gRPC answers RESOURCE_EXHAUSTED
    max_message_mb: float = 16.0
    default_queue_size: int = 64  # for models whose config.pbtxt leaves max_queue_size at 0
    adaptive_delay: bool = True  # see edge.batcher; False waits max_queue_delay exactly as Triton
    token: str | None = None
    tls: TlsFiles | None = None
    grace_s: float = 5.0  # SIGTERM: how long in-flight requests may take to finish

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * MiB)


class Rejected(Exception):
    """A request the server answers with an error status (and keeps serving)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over the loaded models."""

    def __init__(self, models: dict[str, ServedModel], max_message_bytes: int):
        self.models = models
        self.max_message_bytes = max_message_bytes
        self.draining = threading.Event()
        self._last_overload_log = 0.0

    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=not self.draining.is_set())

    def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(name=SERVER_NAME, version=__version__,
                                                      extensions=["model_configuration", "statistics"])

    def ModelReady(self, request, context):
        found = self._find(request.name, request.version) is not None
        return service_pb2.ModelReadyResponse(ready=found and not self.draining.is_set())

    def ModelMetadata(self, request, context):
        entry = self._lookup(request.name, request.version, context)
        manifest = entry.model.manifest
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=entry.name, versions=[entry.version], platform=PLATFORM,
            inputs=[tensor(name=manifest.input.name, datatype=manifest.input.v2_datatype,
                           shape=[-1, *manifest.input.shape])],
            outputs=[tensor(name=manifest.output.name, datatype=manifest.output.v2_datatype,
                            shape=[-1, *manifest.output.shape])],
        )

    def ModelConfig(self, request, context):
        entry = self._lookup(request.name, request.version, context)
        return service_pb2.ModelConfigResponse(config=entry.model.config)

    def ModelStatistics(self, request, context):
        """Triton's statistics extension, the parts that apply: counts and times per model."""
        if request.name:
            entries = [self._lookup(request.name, request.version, context)]
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

    def ModelInfer(self, request, context):
        started = time.perf_counter_ns()
        entry = self.models.get(request.model_name)
        try:
            response = self._infer(request, context)
        except Rejected as rejected:
            if entry is not None:
                entry.stats.record(False, time.perf_counter_ns() - started)
            self._log_rejection(request.model_name, rejected)
            context.abort(rejected.code, rejected.message)
        elapsed = time.perf_counter_ns() - started
        entry.stats.record(True, elapsed)
        log.debug("event=infer model=%s rows=%d ms=%.3f", entry.name, response.outputs[0].shape[0], elapsed / 1e6)
        return response

    def _infer(self, request, context):
        entry = self._lookup(request.model_name, request.model_version, context)
        if self.draining.is_set():
            raise Rejected(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
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
        try:
            output = future.result(timeout=_wait_limit(context.time_remaining()))
        except TimeoutError:
            future.cancel()
            raise Rejected(grpc.StatusCode.DEADLINE_EXCEEDED,
                           f"model {entry.name}: no result before the request's deadline") from None
        except Exception as exc:  # the model itself failed on this batch
            raise Rejected(grpc.StatusCode.INTERNAL, f"model {entry.name} failed: {exc}") from None
        return encode_output(request, entry, output)

    def _find(self, name: str, version: str) -> ServedModel | None:
        entry = self.models.get(name)
        if entry is None or version not in ("", entry.version):
            return None
        return entry

    def _lookup(self, name: str, version: str, context) -> ServedModel:
        entry = self._find(name, version)
        if entry is not None:
            return entry
        if name in self.models:
            message = (f"model '{name}' has no version '{version}' (served: "
                       f"{self.models[name].version})")
        else:
            message = f"unknown model '{name}' (served: {', '.join(sorted(self.models))})"
        self._log_rejection(name, Rejected(grpc.StatusCode.NOT_FOUND, message))
        context.abort(grpc.StatusCode.NOT_FOUND, message)

    def _log_rejection(self, model: str, rejected: Rejected) -> None:
        if rejected.code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # at most one line per second under load
            now = time.monotonic()
            if now - self._last_overload_log < 1.0:
                return
            self._last_overload_log = now
            entry = self.models.get(model)
            log.warning("event=overloaded model=%s rejected_total=%d", model, entry.batcher.rejected if entry else 0)
            return
        log.warning("event=rejected model=%s code=%s detail=%r", model, rejected.code.name, rejected.message)


def _wait_limit(time_remaining: float | None) -> float | None:
    """gRPC reports a huge number (or None) when the client set no deadline: wait without limit."""
    return None if time_remaining is None or time_remaining > 1e6 else max(time_remaining, 0.0)


def decode_input(request, entry: ServedModel) -> np.ndarray:
    """The request's one input as an array, after checking it against the model's contract."""
    spec = entry.model.manifest.input
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    names = [t.name for t in request.inputs]
    if names != [spec.name]:
        raise Rejected(invalid, f"model {entry.name} takes exactly one input '{spec.name}', got {names}")
    tensor = request.inputs[0]
    if tensor.datatype != spec.v2_datatype:
        raise Rejected(invalid, f"input '{spec.name}' must be {spec.v2_datatype}, got {tensor.datatype or '(empty)'}")
    shape = tuple(tensor.shape)
    max_batch = entry.batcher.config.max_batch_size
    if len(shape) != len(spec.shape) + 1 or shape[1:] != spec.shape:
        raise Rejected(invalid, f"input '{spec.name}' must have shape [N, {', '.join(map(str, spec.shape))}], "
                                f"got {list(shape)}")
    if not 1 <= shape[0] <= max_batch:
        raise Rejected(invalid, f"input '{spec.name}': batch size {shape[0]} is outside 1..{max_batch} "
                                f"(max_batch_size of model {entry.name})")
    requested = [o.name for o in request.outputs]
    unknown = [n for n in requested if n != entry.model.manifest.output.name]
    if unknown:
        raise Rejected(invalid, f"model {entry.name} has no output {unknown}; its output is "
                                f"'{entry.model.manifest.output.name}'")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise Rejected(invalid, f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
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
    return service_pb2.ModelInferResponse(model_name=entry.name, model_version=entry.version, id=request.id,
                                          outputs=[tensor], raw_output_contents=[data.tobytes()])


class TokenInterceptor(grpc.ServerInterceptor):
    """Every call must carry metadata `authorization: Bearer <token>`; UNAUTHENTICATED otherwise."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token "
                                                           "(metadata 'authorization: Bearer <token>')")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and hmac.compare_digest(str(value).encode(), self._expected):
                return continuation(handler_call_details)
        log.warning("event=unauthenticated method=%s", handler_call_details.method)
        return self._deny


class EdgeServer:
    """The gRPC server around the loaded models: start, then stop (graceful) from any thread."""

    def __init__(self, config: ServerConfig):
        self.config = config
        credentials = _server_credentials(config.tls) if config.tls else None  # bad files fail before loading
        self.models = load_repository(config.repository, threads=config.threads,
                                      default_queue_size=config.default_queue_size,
                                      adaptive_delay=config.adaptive_delay)
        self.servicer = InferenceServicer(self.models, config.max_message_bytes)
        # The transport admits up to twice the limit so a message just over it gets a clear
        # INVALID_ARGUMENT from the servicer; beyond that gRPC itself answers RESOURCE_EXHAUSTED.
        transport_limit = 2 * config.max_message_bytes
        options = [
            ("grpc.max_receive_message_length", transport_limit),
            ("grpc.max_send_message_length", transport_limit),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
            # Robots send keepalive pings to notice dead links; accept them, also between calls.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
            ("grpc.http2.max_ping_strikes", 0),
            # And ping clients too, so the connections of robots that vanished are closed.
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        interceptors = [TokenInterceptor(config.token)] if config.token else []
        self._server = grpc.server(ThreadPoolExecutor(max_workers=config.max_concurrent_rpcs,
                                                      thread_name_prefix="rpc"),
                                   interceptors=interceptors, options=options,
                                   maximum_concurrent_rpcs=config.max_concurrent_rpcs)
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, self._server)
        address = f"{config.host}:{config.port}"
        try:
            self.port = (self._server.add_secure_port(address, credentials) if credentials
                         else self._server.add_insecure_port(address))
        except RuntimeError as exc:
            stop_all(self.models)
            raise OSError(f"cannot listen on {address}: {exc} (port in use?)") from exc
        if config.token and not config.tls:
            log.warning("event=token_without_tls detail='the bearer token travels in plaintext; configure TLS'")

    def start(self) -> None:
        self._server.start()
        log.info("event=serving address=%s:%d tls=%s mtls=%s token=%s models=%s max_concurrent_rpcs=%d "
                 "max_message_mb=%g", self.config.host, self.port, self.config.tls is not None,
                 bool(self.config.tls and self.config.tls.client_ca), self.config.token is not None,
                 ",".join(sorted(self.models)), self.config.max_concurrent_rpcs, self.config.max_message_mb)

    def stop(self, grace_s: float | None = None) -> None:
        """Refuse new calls (ServerReady turns false), let in-flight ones finish, stop the models."""
        grace = self.config.grace_s if grace_s is None else grace_s
        log.info("event=stopping grace_s=%g", grace)
        self.servicer.draining.set()
        self._server.stop(grace).wait()
        stop_all(self.models, timeout_s=grace)
        log.info("event=stopped")


def _server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    client_ca = tls.client_ca.read_bytes() if tls.client_ca else None
    return grpc.ssl_server_credentials([(tls.key.read_bytes(), tls.cert.read_bytes())],
                                       root_certificates=client_ca, require_client_auth=client_ca is not None)


class KeyValueFormatter(logging.Formatter):
    """One line per event: `ts=... level=... logger=... event=... key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"ts={stamp} level={record.levelname.lower()} logger={record.name} {record.getMessage()}"
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("robot_compress")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def serve(config: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT, then shut down gracefully. Returns the exit code."""
    server = EdgeServer(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    server.start()
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0
