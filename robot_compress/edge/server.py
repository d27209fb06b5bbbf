"""The edge inference service: Open Inference Protocol v2 (KServe / Triton) over gRPC.

Serves every model of a Triton-layout repository with ONNX Runtime and Triton-style dynamic
batching, using the protocol's generated stubs from tritonclient, so any OIP v2 client
(tritonclient, the robot's EdgeBackend) works against it, and the robot can equally be pointed
at a real Triton serving the same directory. Overload is answered with RESOURCE_EXHAUSTED at
once (bounded queues, bounded concurrent calls), never by growing memory.

    robot-compress edge-serve --model-repository models/ --port 8001

The server is gRPC's asyncio server: a call waiting for its request message costs a coroutine,
not a thread (see edge.admission). `command` builds the ServerConfig from the command line;
this module never imports it.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health_pb2_grpc
from tritonclient.grpc import service_pb2_grpc

from robot_compress.edge.admission import CallAdmission
from robot_compress.edge.config import ServerConfig, TlsFiles, check_tls
from robot_compress.edge.logfmt import Throttle
from robot_compress.edge.repository import load_repository, stop_all
from robot_compress.edge.servicer import HealthServicer, InferenceServicer

log = logging.getLogger("robot_compress.edge")


class EdgeServer:
    """The gRPC server around the loaded models. Construct (loads the models), then `run()`."""

    def __init__(self, config: ServerConfig):
        self.config = config
        if config.tls:
            check_tls(config.tls)  # bad files fail before loading, named as such
        self.models = load_repository(config.repository, threads=config.threads,
                                      default_queue_size=config.default_queue_size,
                                      adaptive_delay=config.adaptive_delay)
        self.throttle = Throttle()
        self.servicer = InferenceServicer(self.models, config.max_message_bytes, config.max_concurrent_rpcs,
                                          self.throttle)
        self.admission = CallAdmission(config.token, config.receive_timeout_s, self.throttle)
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    def _options(self) -> list[tuple[str, int]]:
        # The transport admits up to twice the limit so a message just over it gets a clear
        # INVALID_ARGUMENT from the servicer; beyond that gRPC itself answers RESOURCE_EXHAUSTED.
        transport_limit = 2 * self.config.max_message_bytes
        return [
            ("grpc.max_receive_message_length", transport_limit),
            ("grpc.max_send_message_length", transport_limit),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
            ("grpc.max_concurrent_streams", self.config.max_streams_per_connection),
            # Robots send keepalive pings to notice dead links; accept them, also between calls.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
            ("grpc.http2.max_ping_strikes", 0),
            # And ping clients too, so the connections of robots that vanished are closed.
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]

    async def start(self) -> None:
        config = self.config
        self._server = grpc.aio.server(interceptors=[self.admission], options=self._options(),
                                       maximum_concurrent_rpcs=config.max_open_calls)
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(self.servicer), self._server)
        address = f"{config.host}:{config.port}"
        try:
            self.port = (self._server.add_secure_port(address, _server_credentials(config.tls)) if config.tls
                         else self._server.add_insecure_port(address))
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {exc} (port in use, or not an address of this "
                          f"machine?)") from exc
        if config.token and not config.tls:
            log.warning("event=token_without_tls detail=\"the bearer token travels in plaintext; configure TLS\"")
        await self._server.start()
        log.info("event=serving address=%s:%d tls=%s mtls=%s token=%s models=%s max_concurrent_rpcs=%d "
                 "max_message_mb=%g receive_timeout_s=%g max_streams_per_connection=%d max_open_calls=%d", config.host,
                 self.port,
                 config.tls is not None, bool(config.tls and config.tls.client_ca), config.token is not None,
                 ",".join(sorted(self.models)), config.max_concurrent_rpcs, config.max_message_mb,
                 config.receive_timeout_s, config.max_streams_per_connection, config.max_open_calls)

    async def stop(self, forced: asyncio.Event | None = None) -> None:
        """Refuse new calls (ServerReady turns false), let in-flight ones finish within the grace
        period, stop the models. `forced` set during the grace period cuts it short."""
        grace = self.config.grace_s
        log.info("event=stopping grace_s=%g", grace)
        self.servicer.draining = True
        graceful = asyncio.ensure_future(self._server.stop(grace))
        cut_short = asyncio.ensure_future(forced.wait()) if forced else None
        await asyncio.wait([t for t in (graceful, cut_short) if t], return_when=asyncio.FIRST_COMPLETED)
        was_forced = forced is not None and forced.is_set() and not graceful.done()
        if was_forced:
            log.warning("event=stop_forced detail=\"second signal: in-flight calls cancelled\"")
            await self._server.stop(0)
            graceful.cancel()
        if cut_short:
            cut_short.cancel()
        await asyncio.get_running_loop().run_in_executor(None, stop_all, self.models, 0.0 if was_forced else grace)
        log.info("event=stopped admission=%s rejections=%s", dict(self.admission.counts),
                 dict(self.servicer.rejections))

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop gracefully; a second signal cuts the grace short."""
        loop = asyncio.get_running_loop()
        stop, forced = asyncio.Event(), asyncio.Event()

        def on_signal() -> None:
            (forced if stop.is_set() else stop).set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await self.start()
        except BaseException:
            stop_all(self.models)
            raise
        await stop.wait()
        await self.stop(forced)


def _server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    client_ca = tls.client_ca.read_bytes() if tls.client_ca else None
    return grpc.ssl_server_credentials([(tls.key.read_bytes(), tls.cert.read_bytes())],
                                       root_certificates=client_ca, require_client_auth=client_ca is not None)


def serve(config: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT, then shut down gracefully. Returns the exit code."""
    server = EdgeServer(config)
    asyncio.run(server.run())
    return 0
