"""`robot-compress edge-serve`: serve a model repository over the Open Inference Protocol v2 (gRPC)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robot_compress.edge.config import TOKEN_ENV


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", required=True, type=Path,
                        help="Triton-layout repository: <name>/{config.pbtxt,manifest.json,<version>/model.onnx}")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8001, help="gRPC port (default: 8001, as Triton)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per model (default: 1)")
    parser.add_argument("--max-concurrent-rpcs", type=int, default=64,
                        help="inference calls answered at once, counted from the arrival of their request "
                             "message; more get RESOURCE_EXHAUSTED (default: 64)")
    parser.add_argument("--max-message-mb", type=float, default=16.0,
                        help="largest request accepted, in MiB (default: 16)")
    parser.add_argument("--default-queue-size", type=int, default=64,
                        help="queue bound for models whose config.pbtxt sets no max_queue_size (default: 64)")
    parser.add_argument("--strict-queue-delay", action="store_true",
                        help="always wait max_queue_delay for more requests, as Triton does (default: wait "
                             "only when recent concurrency suggests more requests are coming)")
    parser.add_argument("--token-file", type=Path,
                        help=f"file holding the bearer token every call must carry (or set ${TOKEN_ENV})")
    parser.add_argument("--tls-cert", type=Path, help="server certificate (PEM); enables TLS with --tls-key")
    parser.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    parser.add_argument("--tls-client-ca", type=Path, help="CA (PEM) that client certificates must chain to (mTLS)")
    parser.add_argument("--grace-s", type=float, default=5.0,
                        help="on SIGTERM or SIGINT, how long in-flight requests may finish; a second "
                             "signal cuts it short (default: 5)")
    parser.add_argument("--receive-timeout-s", type=float, default=10.0,
                        help="a call must deliver its request message within this time after its headers, "
                             "or it ends with DEADLINE_EXCEEDED (default: 10)")
    parser.add_argument("--max-streams-per-connection", type=int, default=100,
                        help="calls one client connection may have open at once (HTTP/2 streams; "
                             "more wait at the client) (default: 100)")
    parser.add_argument("--max-open-calls", type=int, default=4096,
                        help="calls open at once over all connections, also those still receiving their "
                             "message; beyond it RESOURCE_EXHAUSTED before anything is read (default: 4096)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args: argparse.Namespace) -> int:
    from robot_compress.edge.config import ServerConfig, TlsFiles, read_token
    from robot_compress.edge.logfmt import configure_logging
    from robot_compress.edge.server import serve
    from robot_compress.runtime.errors import RobotCompressError

    configure_logging(args.log_level)
    try:
        token = read_token(args.token_file)
        if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_client_ca and not args.tls_cert):
            raise ValueError("TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)")
        tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
        config = ServerConfig(repository=args.model_repository, host=args.host, port=args.port,
                              threads=args.threads, max_concurrent_rpcs=args.max_concurrent_rpcs,
                              max_message_mb=args.max_message_mb, default_queue_size=args.default_queue_size,
                              adaptive_delay=not args.strict_queue_delay,
                              token=token, tls=tls, grace_s=args.grace_s, receive_timeout_s=args.receive_timeout_s,
                              max_streams_per_connection=args.max_streams_per_connection,
                              max_open_calls=args.max_open_calls)
        return serve(config)
    except (OSError, ValueError, RobotCompressError) as exc:
        print(f"edge-serve: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """The `edge_server` console script and `python -m robot_compress.edge`: same options as
    `robot-compress edge-serve`."""
    parser = argparse.ArgumentParser(prog="edge_server", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
