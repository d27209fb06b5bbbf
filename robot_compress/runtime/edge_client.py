"""The robot's edge backend: Open Inference Protocol v2 over gRPC to the edge server or a real Triton.

Modelled on tritonclient's gRPC client (same stubs, same channel options), but built for a
router that must decide within one frame's deadline: every call has a deadline, keepalive pings
notice a dead link, the channel reconnects by itself with a short backoff, and every failure is a
`BackendError` with one of four kinds. Answers are checked against the manifest, because a wrong
model answering with plausible numbers is worse than no answer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from robot_compress.runtime.backend import BackendError, FailureKind
from robot_compress.runtime.edge_protocol import TensorDecodeError, from_raw
from robot_compress.runtime.model_contract import Manifest

# How a server says "too busy" with UNAVAILABLE (Triton: "Exceeds maximum queue size").
_OVERLOAD_HINTS = ("exceeds maximum queue size", "queue is full", "overload", "too many")


@dataclass(frozen=True)
class ChannelSettings:
    """gRPC channel tuning. The defaults notice a dead link in about keepalive_s + keepalive_timeout_s
    even between calls, and retry a lost server at most every max_reconnect_backoff_s."""

    keepalive_s: float = 2.0
    keepalive_timeout_s: float = 1.0
    max_reconnect_backoff_s: float = 1.0
    max_message_mb: float = 16.0
    ssl_target_name: str | None = None  # TLS: the name to check in the server certificate, if not the host


class EdgeBackend:
    """`Backend` over gRPC: `infer(batch, timeout_s)` -> logits, `probe(timeout_s)` -> seconds.

    Thread-safe: gRPC channels and stubs may be shared by threads, and the object holds no
    per-call state, so the router may call it from several worker threads at once.
    """

    name = "edge"

    def __init__(self, url: str, manifest: Manifest, model_name: str | None = None, model_version: str = "",
                 token: str | None = None, root_certificates: bytes | None = None,
                 private_key: bytes | None = None, certificate_chain: bytes | None = None,
                 tls: bool | None = None, default_timeout_s: float = 1.0, probe_timeout_s: float = 0.25,
                 channel: ChannelSettings | None = None):
        self.url, self.tls = _parse_url(url, tls if tls is not None else root_certificates is not None)
        self.manifest = manifest
        self.model_name = model_name or manifest.name
        self.model_version = model_version
        self.default_timeout_s = default_timeout_s
        self.probe_timeout_s = probe_timeout_s
        self.settings = channel or ChannelSettings()
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._lock = threading.Lock()
        self._credentials = (grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
                             if self.tls else None)
        self._channel = self._open_channel()
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def _open_channel(self) -> grpc.Channel:
        s = self.settings
        limit = int(s.max_message_mb * 1024 * 1024)
        options = [
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
            ("grpc.keepalive_time_ms", int(s.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(s.keepalive_timeout_s * 1000)),
            # grpcio 1.85 drops a connection with an unanswered ping only after ping_timeout
            # (default 60 s): without this a silently dead link goes unnoticed far longer.
            ("grpc.http2.ping_timeout_ms", int(s.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", min(1000, int(s.max_reconnect_backoff_s * 1000))),
            ("grpc.min_reconnect_backoff_ms", min(100, int(s.max_reconnect_backoff_s * 1000))),
            ("grpc.max_reconnect_backoff_ms", int(s.max_reconnect_backoff_s * 1000)),
            ("grpc.enable_retries", 0),  # the router decides about retries, within the frame's deadline
        ]
        if s.ssl_target_name:
            options.append(("grpc.ssl_target_name_override", s.ssl_target_name))
        if self._credentials is not None:
            return grpc.secure_channel(self.url, self._credentials, options=options)
        return grpc.insecure_channel(self.url, options=options)

    def infer(self, batch: np.ndarray, timeout_s: float | None = None) -> np.ndarray:
        """Logits for a preprocessed batch, or BackendError; a wrong input is the caller's bug (ImageError)."""
        spec = self.manifest.input
        spec.check_batch(batch)
        tensor = service_pb2.ModelInferRequest.InferInputTensor(name=spec.name, datatype=spec.v2_datatype,
                                                                shape=batch.shape)
        request = service_pb2.ModelInferRequest(
            model_name=self.model_name, model_version=self.model_version, inputs=[tensor],
            outputs=[service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=self.manifest.output.name)],
            raw_input_contents=[np.ascontiguousarray(batch).tobytes()])
        timeout = self.default_timeout_s if timeout_s is None else timeout_s
        response = self._call("ModelInfer", request, timeout)
        return self._check_answer(response, len(batch))

    def detect(self, images: list[np.ndarray], encoding: str = "bgr8", score_threshold: float | None = None,
               timeout_s: float | None = None):
        """Camera images of any size -> detections in each image's own pixels (detection models),
        letterboxed at the edge model's input size (learnt from its metadata by `probe`)."""
        from robot_compress.runtime.detection import detect

        return detect(self, images, encoding, score_threshold, timeout_s=timeout_s)

    def probe(self, timeout_s: float | None = None) -> float:
        """Seconds for ServerReady + ModelReady + ModelMetadata, all within `timeout_s` together;
        BackendError if the edge could not serve this model now (not ready counts as UNREACHABLE, a
        model whose tensors differ from the manifest as BAD_ANSWER)."""
        timeout = self.probe_timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        if not self._call("ServerReady", service_pb2.ServerReadyRequest(), timeout).ready:
            raise BackendError(FailureKind.UNREACHABLE, f"edge server {self.url} is not ready")
        remaining = max(timeout - (time.monotonic() - started), 1e-3)
        request = service_pb2.ModelReadyRequest(name=self.model_name, version=self.model_version)
        if not self._call("ModelReady", request, remaining).ready:
            raise BackendError(FailureKind.UNREACHABLE, f"model '{self.model_name}' is not ready on {self.url}")
        remaining = max(timeout - (time.monotonic() - started), 1e-3)
        request = service_pb2.ModelMetadataRequest(name=self.model_name, version=self.model_version)
        self._check_metadata(self._call("ModelMetadata", request, remaining))
        return time.monotonic() - started

    def served_task(self, timeout_s: float | None = None) -> str:
        """What the edge's model does, from its metadata alone (works with a real Triton too):
        'detection' or 'classification' (see `task_of_metadata`); BackendError if it cannot be asked."""
        timeout = self.probe_timeout_s if timeout_s is None else timeout_s
        request = service_pb2.ModelMetadataRequest(name=self.model_name, version=self.model_version)
        return task_of_metadata(self._call("ModelMetadata", request, timeout))

    def _check_metadata(self, metadata) -> None:
        """A ready edge serving another model under our model's name must not look healthy: the
        router would go back to it only to replace every answer locally. BAD_ANSWER otherwise."""
        if self.manifest.task == "detection":
            self._adopt_detection_metadata(metadata)
            return
        manifest = self.manifest
        for wanted, tensors in ((manifest.input, metadata.inputs), (manifest.output, metadata.outputs)):
            found = {t.name: t for t in tensors}.get(wanted.name)
            dims = list(found.shape) if found else []
            if found is None or found.datatype != wanted.v2_datatype or dims[-len(wanted.shape):] != list(wanted.shape) \
                    or len(dims) not in (len(wanted.shape), len(wanted.shape) + 1):
                served = {t.name: (t.datatype, list(t.shape)) for t in tensors}
                raise BackendError(FailureKind.BAD_ANSWER, f"edge model '{self.model_name}' on {self.url} serves "
                                   f"{served}, manifest expects '{wanted.name}' {wanted.v2_datatype} "
                                   f"{list(wanted.shape)}")

    def _adopt_detection_metadata(self, metadata) -> None:
        """A detection edge model may take another input size than the robot's (640 on the edge,
        320 on the robot: the letterbox happens per backend). Its input side and number of output
        rows are taken from the served metadata; anything else must be the detection contract's,
        else BAD_ANSWER naming both tasks."""
        task = task_of_metadata(metadata)
        served = {t.name: (t.datatype, list(t.shape)) for t in (*metadata.inputs, *metadata.outputs)}
        manifest = self.manifest
        if task != "detection":
            raise BackendError(FailureKind.BAD_ANSWER, f"edge model '{self.model_name}' on {self.url} is a {task} "
                               f"model ({served}); the robot's model '{manifest.name}' is a detection model")
        size, rows = int(metadata.inputs[0].shape[-2]), int(metadata.outputs[0].shape[-2])
        if (metadata.inputs[0].name, metadata.outputs[0].name) != (manifest.input.name, manifest.output.name):
            raise BackendError(FailureKind.BAD_ANSWER, f"edge model '{self.model_name}' on {self.url} serves "
                               f"{served}, manifest expects '{manifest.input.name}' and '{manifest.output.name}'")
        if manifest.input.shape[0] != size or manifest.output.shape[0] != rows:
            data = manifest.to_json()
            data["input"]["shape"] = [size, size, 3]
            data["preprocessing"]["input_size"] = [size, size]
            data["output"]["shape"] = [rows, 6]
            data["detection"]["max_detections"] = rows
            self.manifest = Manifest.from_json(data, where=f"edge model '{self.model_name}' metadata")

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None

    def __enter__(self) -> EdgeBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, request, timeout_s: float):
        if self._channel is None:
            raise BackendError(FailureKind.UNREACHABLE, "edge backend is closed")
        try:
            return getattr(self._stub, method)(request, timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise failure_from_rpc(exc, f"{method} {self.model_name}@{self.url}") from exc
        except ValueError as exc:  # grpc raises ValueError on a channel closed by another thread
            raise BackendError(FailureKind.UNREACHABLE, f"{method}: {exc}") from exc

    def _check_answer(self, response, rows: int) -> np.ndarray:
        """The output tensor, if the answer is the manifest's model and output; else BAD_ANSWER."""
        spec = self.manifest.output

        def bad(problem: str) -> BackendError:
            return BackendError(FailureKind.BAD_ANSWER, f"edge answer from {self.url}: {problem}")

        if response.model_name != self.model_name:
            raise bad(f"model '{response.model_name}', expected '{self.model_name}'")
        if self.model_version and response.model_version != self.model_version:
            raise bad(f"model version '{response.model_version}', expected '{self.model_version}'")
        names = [o.name for o in response.outputs]
        if spec.name not in names:
            raise bad(f"outputs {names}, expected '{spec.name}'")
        index = names.index(spec.name)
        output = response.outputs[index]
        shape = (rows, *spec.shape)
        if output.datatype != spec.v2_datatype or tuple(output.shape) != shape:
            raise bad(f"output '{spec.name}' is {output.datatype} {list(output.shape)}, expected "
                      f"{spec.v2_datatype} {list(shape)}")
        if len(response.raw_output_contents) != len(response.outputs):
            raise bad(f"{len(response.raw_output_contents)} raw output contents for {len(names)} outputs")
        try:
            return from_raw(response.raw_output_contents[index], spec.v2_datatype, shape, spec.name)
        except TensorDecodeError as exc:
            raise bad(str(exc)) from exc


def task_of_metadata(metadata) -> str:
    """'detection' when the served model has the detection contract's tensors (one uint8 input
    [N, S, S, 3], one float32 output [N, K, 6]), else 'classification'."""
    if len(metadata.inputs) == 1 and len(metadata.outputs) == 1:
        (inp,), (out,) = metadata.inputs, metadata.outputs
        in_dims, out_dims = list(inp.shape)[-3:], list(out.shape)[-2:]
        if inp.datatype == "UINT8" and len(in_dims) == 3 and in_dims[2] == 3 and in_dims[0] == in_dims[1] > 0 \
                and out.datatype == "FP32" and len(out_dims) == 2 and out_dims[1] == 6 and out_dims[0] > 0:
            return "detection"
    return "classification"


def failure_from_rpc(exc: grpc.RpcError, what: str) -> BackendError:
    """gRPC status -> the router's failure kinds. Anything not about time, reachability or load
    (auth, not found, invalid argument, internal error) means the edge cannot give this robot a
    valid answer as configured: BAD_ANSWER."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
    message = f"{what}: {code.name} {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return BackendError(FailureKind.TIMEOUT, message)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # gRPC also says so for a message over its size limit
        too_big = "larger than max" in details
        return BackendError(FailureKind.BAD_ANSWER if too_big else FailureKind.OVERLOADED, message)
    if code == grpc.StatusCode.UNAVAILABLE:
        overloaded = any(hint in details.lower() for hint in _OVERLOAD_HINTS)
        return BackendError(FailureKind.OVERLOADED if overloaded else FailureKind.UNREACHABLE, message)
    if code == grpc.StatusCode.CANCELLED:
        return BackendError(FailureKind.UNREACHABLE, message)
    return BackendError(FailureKind.BAD_ANSWER, message)


def _parse_url(url: str, tls: bool) -> tuple[str, bool]:
    """"host:port", "grpc://host:port" or "grpcs://host:port" (TLS) -> (target, tls)."""
    for scheme, scheme_tls in (("grpcs://", True), ("grpc://", False)):
        if url.startswith(scheme):
            return url[len(scheme):], scheme_tls or tls
    if "://" in url:
        raise ValueError(f"edge url {url!r}: use host:port, grpc://host:port or grpcs://host:port")
    return url, tls
